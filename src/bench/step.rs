//! `vitcore bench step`: the speed of one whole training step — forward, cross-entropy, backward,
//! Adam — on the CPU or the GPU, as `benches/torch_train.py` measures PyTorch's, so the two can be
//! run side by side on one machine (`benches/compare_cpu.sh`, `scripts/gpu-check.sh`).
//!
//! One fixed random batch (images ~ N(0, 1), labels uniform), `warmup` untimed steps, then
//! `steps` timed ones; each step ends by reading the loss (`loss.item()`, as the PyTorch script
//! does), which on the GPU waits for the step's kernels, so a step's wall time is its real cost.
//! The median is reported. The loss must stay finite, or the command fails: a benchmark of a
//! broken step would be a number about nothing.

use crate::backend::cuda::{resolve_and_report, DeviceChoice, Resolved};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::Vit;
use crate::optim::{clip_grad_value, Adam, AdamConfig};
use crate::rng::Rng;
use crate::train::{forward_backward, TrainConfig};
use crate::{ParamStore, Tensor};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The model and batch of a step benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StepPreset {
    /// The original write-up's model: embed 16, 8 heads, 4 layers, FF 2048, dropout 0.001, batch 512.
    Seed,
    /// Embed 64, 4 heads, 6 layers, MLP 256, dropout 0.1, batch 256 (`benches/torch_train.py small`).
    Small,
    /// The recipe `vitcore train mnist` trains.
    Default,
    /// `train folder`'s default: the default recipe at 64×64 RGB, patch 8, batch 64.
    Photos,
    /// The Keras flowers write-up's model (`--preset flowers`): 200×200 RGB, patch 25, 12
    /// layers, hidden 768, 12 heads of key width 768, batch 16, Adam with Keras's epsilon and
    /// clipping by value; 398M parameters (about 9 GB while it trains).
    Flowers,
}

impl StepPreset {
    pub fn name(self) -> &'static str {
        match self {
            StepPreset::Seed => "seed",
            StepPreset::Small => "small",
            StepPreset::Default => "default",
            StepPreset::Photos => "photos",
            StepPreset::Flowers => "flowers",
        }
    }

    /// The training configuration (model, batch size, learning rate) of the preset.
    pub fn config(self) -> TrainConfig {
        match self {
            StepPreset::Small => {
                let mut cfg = TrainConfig::seed_preset();
                cfg.model.embed_dim = 64;
                cfg.model.heads = 4;
                cfg.model.depth = 6;
                cfg.model.mlp_dim = 256;
                cfg.model.dropout = 0.1;
                cfg.model.attn_dropout = 0.1;
                cfg.batch_size = 256;
                cfg
            }
            // The others are training presets of the same name.
            _ => TrainConfig::preset(self.name()).expect("a training preset of this name"),
        }
    }
}

/// What `vitcore bench step` was asked to do.
#[derive(Clone, Debug)]
pub struct StepOptions {
    pub preset: StepPreset,
    pub device: DeviceChoice,
    pub steps: usize,
    pub warmup: usize,
    /// Override the preset's batch size.
    pub batch: Option<usize>,
    /// Print the per-op time split (CPU: where the step's time goes; on the GPU it would only
    /// show launch times, so it is refused there).
    pub profile: bool,
    pub json: Option<PathBuf>,
}

/// One result, in the fields `benches/torch_train.py` prints.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub preset: String,
    pub device: String,
    pub batch: usize,
    pub threads: usize,
    pub median_ms_per_step: f64,
    pub min_ms_per_step: f64,
    pub images_per_s: f64,
    pub steps: usize,
    pub warmup: usize,
    pub params: usize,
    pub final_loss: f32,
    /// The process's peak resident memory (Linux's `VmHWM`), MiB; `None` where it cannot be read.
    pub peak_rss_mib: Option<f64>,
    pub commit: Option<String>,
}

/// The process's peak resident set size in MiB, from `/proc/self/status` (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// Time the training step (see the module doc) and print its JSON record on stdout.
pub fn run_step(opts: &StepOptions) -> Result<StepRecord> {
    if opts.steps == 0 {
        return Err(Error::config("bench step: --steps must be at least 1"));
    }
    let resolved = resolve_and_report(opts.device)?;
    let device = resolved.device();
    if opts.profile && device == Device::Cuda {
        return Err(Error::config(
            "bench step: --profile times ops on the host, which on the GPU measures only kernel launches",
        ));
    }
    let mut cfg = opts.preset.config();
    if let Some(b) = opts.batch {
        if b == 0 {
            return Err(Error::config("bench step: --batch must be at least 1"));
        }
        cfg.batch_size = b;
    }
    let batch = cfg.batch_size;
    let m = &cfg.model;
    let mut store = ParamStore::new();
    let vit = Vit::with_options(m.clone(), cfg.model_options.clone(), &mut store, 1)?;
    store.to_device(device)?;
    let mut adam = Adam::adam(AdamConfig {
        lr: cfg.lr,
        eps: cfg.eps,
        ..AdamConfig::default()
    })?
    .with_eps_hat(cfg.eps_hat);
    let mut rng = Rng::new(3);
    let pixels = m.channels * m.image_height * m.image_width;
    let images = Tensor::from_vec(
        rng.normal_vec(batch * pixels, 1.0),
        &[batch, m.channels, m.image_height, m.image_width],
    )?
    .to_device(device)?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(m.num_classes) as u32).collect();

    let mut times = Vec::with_capacity(opts.steps);
    let mut loss_value = f32::NAN;
    for step in 0..opts.warmup + opts.steps {
        if opts.profile && step == opts.warmup {
            crate::autograd::profile::enable(true);
        }
        let t0 = Instant::now();
        let (loss, _) = forward_backward(&vit, &mut store, images.clone(), &labels, 0.0, step as u64)?;
        if let Some(c) = cfg.clip_value {
            clip_grad_value(&mut store, c)?;
        }
        adam.step(&mut store)?;
        loss_value = loss.item()?; // waits for the GPU: the step is done
        if step >= opts.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        if !loss_value.is_finite() {
            return Err(Error::config(format!(
                "bench step: the loss became {loss_value} at step {step}"
            )));
        }
    }
    if opts.profile {
        errln!("{}", crate::autograd::profile::report());
        crate::autograd::profile::enable(false);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let record = StepRecord {
        implementation: format!("vitcore-{device}"),
        preset: opts.preset.name().to_string(),
        device: match &resolved {
            Resolved::Cpu { .. } => "cpu".to_string(),
            Resolved::Cuda(dev) => dev.describe(),
        },
        batch,
        threads: rayon::current_num_threads(),
        median_ms_per_step: (median * 1e4).round() / 10.0,
        min_ms_per_step: (times[0] * 1e4).round() / 10.0,
        images_per_s: (batch as f64 / median * 10.0).round() / 10.0,
        steps: opts.steps,
        warmup: opts.warmup,
        params: store.numel(),
        final_loss: loss_value,
        peak_rss_mib: peak_rss_mib(),
        commit: super::git_commit(),
    };
    super::print_record(&record, opts.json.as_deref())?;
    Ok(record)
}
