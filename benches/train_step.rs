//! Training-step benchmark on the CPU: ms/step and images/s of one full step (forward,
//! cross-entropy, backward, Adam) of the seed preset, the small config or the default recipe, and
//! the per-op time split. The same measurement as `vitcore bench step` (`src/bench/step.rs`),
//! kept as a cargo bench for `benches/compare_cpu.sh`:
//!
//! `cargo bench --bench train_step -- seed|small|default [--steps N] [--warmup W]` prints one JSON
//! record beside `benches/torch_train.py`'s (PyTorch, 2 threads), both measured in the same
//! session on the same machine. Speed is measured here, never in tests.

use vitcore::backend::cuda::DeviceChoice;
use vitcore::bench::step::{run_step, StepOptions, StepPreset};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = if args.iter().any(|a| a == "small") {
        StepPreset::Small
    } else if args.iter().any(|a| a == "default") {
        StepPreset::Default
    } else {
        StepPreset::Seed
    };
    let opts = StepOptions {
        preset,
        device: DeviceChoice::Cpu,
        steps: arg(&args, "--steps", 5),
        warmup: arg(&args, "--warmup", 2),
        batch: None,
        profile: true,
        json: None,
    };
    if let Err(e) = run_step(&opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
