//! The whole command, `vitcore train mnist`, on the GPU against the same run on the CPU: a few
//! training steps (two epochs of six batches) of a small ViT with dropout on a subset of MNIST,
//! then validation and the test set. Every number the run writes — the per-epoch train loss and
//! accuracy, validation loss and accuracy, the learning rate, the test loss and accuracy — must
//! match the CPU run's to 1e-4 relative (the loss passes through about forty kernels per step,
//! each summing in another order than the CPU; accuracies are counts and match exactly unless a
//! logit pair is within rounding of a tie).
//!
//! Without a usable GPU this prints `skipped: <reason>` and passes (`VITCORE_REQUIRE_CUDA=1`
//! makes that a failure); CI runs it on the cudasim simulator (`scripts/cudasim-env.sh`).

mod cli_common;
mod cuda_common;

use cli_common::{args_with, read_json, vitcore, TempDir};
use std::path::Path;

/// A small model with dropout everywhere (so the GPU's dropout masks are exercised).
const MODEL: &str = "--patch 7 --embed-dim 16 --depth 2 --heads 2 --mlp-dim 32 --dropout 0.1 \
                     --batch-size 32 --train-limit 200 --test-limit 100 --epochs 2 --seed 7 --quiet";

fn train(device: &str, extra: &str, out: &Path) -> String {
    let run = vitcore(args_with(
        &format!("train mnist {MODEL} {extra} --device {device} --out"),
        &[out],
    ))
    .ok();
    run.stderr
}

fn close(what: &str, gpu: f64, cpu: f64) {
    let rel = (gpu - cpu).abs() / cpu.abs().max(1e-12);
    assert!(
        rel <= 1e-4,
        "{what}: GPU {gpu} vs CPU {cpu} (relative difference {rel:.2e} > 1e-4)"
    );
}

#[test]
fn training_on_the_gpu_matches_the_cpu_run() {
    runs_match("");
}

/// The weights' moving average is updated on the device (scale and add kernels) and is what
/// the validation and the test see; zoom, shear and elastic distortion run in the loader.
#[test]
fn training_with_ema_and_elastic_augmentation_on_the_gpu_matches_the_cpu_run() {
    runs_match("--ema 0.9 --scale 0.1 --shear 10 --elastic 8,3");
}

fn runs_match(extra: &str) {
    if cuda_common::gpu().is_none() {
        return; // printed why
    }
    let dir = TempDir::new("cuda_train");
    let (cpu, gpu) = (dir.join("cpu"), dir.join("gpu"));
    train("cpu", extra, &cpu);
    let gpu_stderr = train("cuda", extra, &gpu);
    assert!(
        gpu_stderr.contains("device: cuda"),
        "the GPU run did not use the GPU:\n{gpu_stderr}"
    );
    let read = |run: &Path| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(run.join("log.csv")).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let (rows_cpu, rows_gpu) = (read(&cpu), read(&gpu));
    assert_eq!(rows_cpu.len(), 2, "two epochs logged");
    assert_eq!(rows_gpu.len(), rows_cpu.len());
    let header = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"];
    for (rc, rg) in rows_cpu.iter().zip(&rows_gpu) {
        for (i, name) in header.iter().enumerate() {
            let (c, g): (f64, f64) = (rc[i].parse().unwrap(), rg[i].parse().unwrap());
            close(&format!("epoch {} {name}", rc[0]), g, c);
        }
    }
    let (mc, mg) = (
        read_json(&cpu.join("test_metrics.json")),
        read_json(&gpu.join("test_metrics.json")),
    );
    let (rc, rg) = (&mc["result"], &mg["result"]);
    for key in ["loss", "accuracy"] {
        let (c, g) = (rc[key].as_f64(), rg[key].as_f64());
        let (c, g) = (
            c.unwrap_or_else(|| panic!("{key} missing: {mc}")),
            g.unwrap_or_else(|| panic!("{key} missing: {mg}")),
        );
        close(&format!("test {key}"), g, c);
    }
    assert_eq!(rc["total"], rg["total"], "test images evaluated");
}
