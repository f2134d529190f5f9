//! CPU training-step benchmark: ms/step and images/s of one full step (forward, cross-entropy,
//! backward, Adam) of the seed preset or the small config, and the per-op time split.
//!
//! `cargo bench --bench train_step -- seed|small|default [--steps N] [--warmup W]` prints one JSON
//! record (`default`: the recipe `vitcore train mnist` trains, for profiling the main job).
//! `benches/compare_cpu.sh` runs it beside `benches/torch_train.py` (PyTorch, 2 threads) so both
//! are measured in the same session on the same machine. Speed is measured here, never in tests.

use std::time::Instant;
use vitcore::nn::{Mode, Vit};
use vitcore::optim::{Adam, AdamConfig};
use vitcore::rng::Rng;
use vitcore::train::TrainConfig;
use vitcore::{Graph, ParamStore, Tensor};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = ["small", "default"]
        .into_iter()
        .find(|p| args.iter().any(|a| a == p))
        .unwrap_or("seed");
    let mut cfg = match preset {
        // The recipe of `vitcore train mnist` (patch 7, embed 64, 6 layers, batch 128, no dropout).
        "default" => TrainConfig::default_preset(),
        _ => TrainConfig::seed_preset(),
    };
    if preset == "small" {
        // embed 64, 4 heads, 6 layers, MLP 256, batch 256, dropout 0.1 (as benches/torch_train.py).
        cfg.model.embed_dim = 64;
        cfg.model.heads = 4;
        cfg.model.depth = 6;
        cfg.model.mlp_dim = 256;
        cfg.model.dropout = 0.1;
        cfg.model.attn_dropout = 0.1;
        cfg.batch_size = 256;
    }
    let (steps, warmup) = (arg(&args, "--steps", 5), arg(&args, "--warmup", 2));
    let batch = cfg.batch_size;
    let mut store = ParamStore::new();
    let vit = Vit::new(cfg.model.clone(), &mut store, 1).expect("model builds");
    let mut adam = Adam::adam(AdamConfig {
        lr: cfg.lr,
        ..AdamConfig::default()
    })
    .expect("adam");
    let mut rng = Rng::new(3);
    let x = Tensor::from_vec(rng.normal_vec(batch * 784, 1.0), &[batch, 1, 28, 28]).unwrap();
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
    let mut times = Vec::new();
    for step in 0..warmup + steps {
        if step == warmup {
            vitcore::autograd::profile::enable(true);
        }
        let t0 = Instant::now();
        let mut g = Graph::new();
        let logits = vit
            .forward(&mut g, &store, x.clone(), Mode::Train { seed: step as u64 })
            .unwrap();
        let loss = g.cross_entropy(logits, &labels, 0.0).unwrap();
        let grads = g.backward(loss).unwrap();
        store.zero_grad();
        store.accumulate_grads(&grads).unwrap();
        drop(grads);
        drop(g);
        adam.step(&mut store).unwrap();
        if step >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    eprintln!("{}", vitcore::autograd::profile::report());
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\": \"vitcore-cpu\", \"preset\": \"{preset}\", \"batch\": {batch}, \"threads\": {}, \"median_ms_per_step\": {:.1}, \"images_per_s\": {:.1}}}",
        rayon::current_num_threads(),
        median * 1e3,
        batch as f64 / median
    );
}
