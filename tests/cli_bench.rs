//! `vitcore bench kernels` through the binary: the quick CPU run prints its table and writes a
//! JSON report whose records are complete and validated; a bad filter and `--device cuda` on a
//! machine without a GPU fail cleanly. Timings are never asserted (they depend on the machine);
//! only that they are positive, finite numbers.

mod cli_common;

use cli_common::*;
use std::path::Path;
use std::sync::OnceLock;

/// The quick CPU run, shared by the tests of this file: (its output, its JSON report).
fn quick_run() -> &'static (Run, serde_json::Value) {
    static RUN: OnceLock<(Run, serde_json::Value)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = shared_dir("cli_bench");
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("bench.json");
        let run = vitcore(args_with("bench kernels --quick --device cpu --json", &[&json])).ok();
        let report = read_json(&json);
        (run, report)
    })
}

fn positive(v: &serde_json::Value, what: &str) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn quick_cpu_run_prints_the_table() {
    let (run, _) = quick_run();
    let out = &run.stdout;
    assert!(out.contains("copy bandwidth:"), "{out}");
    assert!(out.contains("f32 peak:"), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("kernel"))
        .unwrap_or_else(|| panic!("no table header:\n{out}"));
    for col in ["phase", "shape", "median", "achieved", "yardstick", "ratio"] {
        assert!(header.contains(col), "header lacks {col}: {header}");
    }
    // Every op family has a row, forward and backward where it has both.
    for row_start in [
        "linear ",
        "linear.dx",
        "linear.dw",
        "matmul ",
        "softmax",
        "layernorm",
        "gelu ",
        "gelu_dropout",
        "dropout ",
        "dropout_add",
        "attention",
        "patchify",
        "add ",
        "add_broadcast",
        "sum_rows",
        "cross_entropy",
        "adam",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(row_start)),
            "no row for {row_start:?}:\n{out}"
        );
    }
    assert!(
        out.lines().any(|l| l.contains("GFLOP/s") && l.contains("peak")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("GB/s") && l.contains("copy")), "{out}");
    assert!(!out.contains("INVALID"), "{out}");
}

#[test]
fn quick_cpu_run_writes_a_complete_json_report() {
    let (run, report) = quick_run();
    assert_eq!(report["device"]["kind"], "cpu");
    assert!(report["device"]["name"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(report["device"]["parallelism"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(report["quick"], true);
    assert_eq!(report["copy_bandwidth"]["unit"], "GB/s");
    positive(&report["copy_bandwidth"]["value"], "copy bandwidth");
    let records = report["records"].as_array().expect("records");
    // The table has one row per record.
    let rows = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("kernel"))
        .skip(1)
        .take_while(|l| !l.starts_with("wrote"))
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(records.len(), rows, "{}", run.stdout);
    assert!(records.len() >= 40, "only {} records", records.len());
    for r in records {
        let name = format!("{} {} {}", r["kernel"], r["phase"], r["shape"]);
        assert!(
            ["fwd", "bwd", "step"].contains(&r["phase"].as_str().unwrap_or("")),
            "{name}"
        );
        let median = positive(&r["median_s"], &format!("{name} median_s"));
        assert!(
            positive(&r["min_s"], "min_s") <= median && median <= positive(&r["max_s"], "max_s"),
            "{name}"
        );
        assert!(r["runs"].as_u64().is_some_and(|n| n >= 5), "{name}: {}", r["runs"]);
        assert!(r["input_sets"].as_u64().is_some_and(|n| n >= 2), "{name}");
        positive(&r["bytes"], &format!("{name} bytes"));
        positive(&r["gbps"], &format!("{name} gbps"));
        let v = &r["validation"];
        assert_eq!(v["passed"], true, "{name}: {v}");
        assert!(v["elements"].as_u64().is_some_and(|n| n > 0), "{name}: {v}");
        let worst = v["worst_error_over_tolerance"].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..1.0).contains(&worst), "{name}: {v}");
        match r["bound"].as_str() {
            Some("compute") => {
                positive(&r["flops"], &format!("{name} flops"));
                positive(&r["gflops"], &format!("{name} gflops"));
                if report["peak"].is_object() {
                    assert_eq!(r["yardstick"]["name"], "CPU peak", "{name}");
                }
            }
            Some("memory") => assert_eq!(r["yardstick"]["name"], "copy bandwidth", "{name}"),
            other => panic!("{name}: bound {other:?}"),
        }
        if r["yardstick"].is_object() {
            positive(&r["ratio"], &format!("{name} ratio"));
        }
    }
}

#[test]
fn filter_selects_kernels_and_a_filter_matching_nothing_fails() {
    let r = vitcore(words("bench kernels --quick --device cpu --filter layernorm")).ok();
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("kernel"))
        .skip(1)
        .collect();
    assert!(rows.len() >= 2, "{}", r.stdout);
    assert!(rows.iter().all(|l| l.starts_with("layernorm")), "{}", r.stdout);

    let r = vitcore(words("bench kernels --quick --device cpu --filter no-such-kernel"));
    r.fails_mentioning(&["no-such-kernel", "matches no benchmark", "layernorm"]);
}

#[test]
fn cuda_without_a_gpu_fails_cleanly() {
    if vitcore::backend::cuda::cuda_available().is_ok() {
        eprintln!("skipped: this machine has a usable GPU");
        return;
    }
    let dir = TempDir::new("bench-cuda");
    let json = dir.join("bench.json");
    let r = vitcore(args_with("bench kernels --quick --device cuda --json", &[&json]));
    r.fails_mentioning(&["--device cuda"]);
    assert!(r.stderr.lines().count() <= 2, "one clear message:\n{}", r.stderr);
    assert!(!json.exists(), "no report for a run that did not happen");

    // auto falls back to the CPU, saying why in one line.
    let r = vitcore(words("bench kernels --quick --device auto --filter dropout_add")).ok();
    let why = r
        .stdout
        .lines()
        .find(|l| l.contains("no usable GPU"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(why.contains("benchmarking the CPU"), "{why}");
}

#[test]
fn json_into_a_missing_folder_fails_before_measuring() {
    let dir = TempDir::new("bench-json");
    let json = dir.join("no/such/folder/bench.json");
    let r = vitcore(args_with("bench kernels --quick --device cpu --json", &[&json]));
    r.fails_mentioning(&["bench.json", "does not exist"]);
    assert!(
        !r.stdout.contains("kernel "),
        "it measured before failing:\n{}",
        r.stdout
    );
}

#[test]
fn help_documents_the_command() {
    let r = vitcore(words("bench kernels --help")).ok();
    for flag in ["--device", "--json", "--quick", "--filter", "yardstick", "cuBLAS"] {
        assert!(r.stdout.contains(flag), "help lacks {flag}:\n{}", r.stdout);
    }
    let r = vitcore(words("--help")).ok();
    assert!(r.stdout.contains("bench"), "{}", r.stdout);
}

#[test]
fn bench_step_prints_one_json_record_like_the_pytorch_script() {
    let dir = TempDir::new("bench-step");
    let json = dir.join("step.json");
    let r = vitcore(args_with(
        "bench step --preset small --device cpu --steps 2 --warmup 1 --batch 8 --json",
        &[&json],
    ))
    .ok();
    let line = r
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output:\n{}", r.stderr));
    let rec: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    // The fields benches/torch_train.py prints, so the two records compare directly.
    assert_eq!(rec["impl"], "vitcore-cpu");
    assert_eq!(rec["preset"], "small");
    assert_eq!(rec["batch"], 8);
    assert_eq!(rec["steps"], 2);
    let (median, min) = (
        positive(&rec["median_ms_per_step"], "median"),
        positive(&rec["min_ms_per_step"], "min"),
    );
    assert!(min <= median, "min {min} > median {median}");
    let ips = positive(&rec["images_per_s"], "images_per_s");
    assert!(
        (ips - 8.0 / (median / 1e3)).abs() <= 0.01 * ips,
        "images/s {ips} vs median {median} ms"
    );
    positive(&rec["final_loss"], "final loss");
    positive(&rec["params"], "params");
    assert_eq!(
        std::fs::read_to_string(&json).unwrap().trim(),
        line,
        "the file holds the printed record"
    );
    assert_eq!(r.stderr.lines().next(), Some("device: cpu"), "{}", r.stderr);

    // The record names the commit the binary was built from, wherever it runs: here from a
    // folder outside any git repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        let r = vitcore_in(
            &dir.0,
            words("bench step --preset small --device cpu --steps 1 --warmup 0 --batch 4"),
        )
        .ok();
        let rec: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap();
        let commit = rec["commit"].as_str().unwrap_or_else(|| panic!("no commit: {rec}"));
        assert!(
            commit == head || commit == format!("{head}-dirty"),
            "commit {commit}, HEAD {head}"
        );
    }

    // --profile adds the per-op split on stderr; bad counts are refused.
    let r = vitcore(words(
        "bench step --device cpu --steps 1 --warmup 0 --batch 4 --profile",
    ))
    .ok();
    assert!(
        r.stderr.contains("attention") && r.stderr.contains("share"),
        "{}",
        r.stderr
    );
    vitcore(words("bench step --device cpu --steps 0")).fails_mentioning(&["--steps"]);
    vitcore(words("bench step --device cpu --batch 0")).fails_mentioning(&["--batch"]);
}
