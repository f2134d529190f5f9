//! `vitcore bench loader DIR`: the speed of `train folder`'s data loading alone, to set beside
//! the training step's images/s (`vitcore bench step`): the loader is not the bottleneck when
//! it delivers images faster than the step consumes them.
//!
//! Two phases, as a run meets them:
//! 1. **decode**: every file of the class folders read, decoded (JPEG/PNG, EXIF orientation)
//!    and resized to the model's input, in parallel over the rayon threads
//!    (`data::folder::load`). A run does this once, before its first epoch; the pixels stay
//!    in memory after it.
//! 2. **epoch**: one shuffled pass of batches from memory with the preset's photo augmentation
//!    (random resized crop, flip, rotation, colour jitter) and normalisation, as each epoch
//!    does (`data::BatchLoader`). Training takes these from a worker thread that prepares the
//!    next batches while the step runs.
//!
//! Each phase is timed once (the decode cannot be repeated without the operating system's file
//! cache flattering the second pass; the first is what a user waits for); the record gives
//! images/s of each. Nothing is validated beyond the count: the pixels are the ones
//! `tests/cli_photos.rs` checks.

use crate::data::folder::{self, PhotoShape};
use crate::data::{BatchLoader, LoaderConfig};
use crate::error::{Error, Result};
use crate::train::TrainConfig;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What `vitcore bench loader` was asked to do.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// The class folders.
    pub dir: PathBuf,
    /// The training configuration whose input size, resize mode, batch size, augmentation and
    /// normalisation are measured (a preset, with `--image-size` / `--batch` applied).
    pub cfg: TrainConfig,
    pub json: Option<PathBuf>,
}

/// One result.
#[derive(Clone, Debug, Serialize)]
pub struct LoaderRecord {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub preset: String,
    pub images: usize,
    /// Bytes of the image files read.
    pub file_mib: f64,
    /// The model's input side and channels.
    pub image_size: usize,
    pub channels: usize,
    pub batch: usize,
    pub threads: usize,
    /// Decode and resize every file, once.
    pub decode_s: f64,
    pub decode_images_per_s: f64,
    /// One augmented, normalised epoch from memory.
    pub epoch_s: f64,
    pub epoch_images_per_s: f64,
    pub commit: Option<String>,
}

/// Time the two phases (see the module doc) and print the JSON record on stdout.
pub fn run_loader(opts: &LoaderOptions) -> Result<LoaderRecord> {
    let cfg = &opts.cfg;
    cfg.validate()?;
    let m = &cfg.model;
    let shape = PhotoShape {
        size: m.image_height,
        channels: m.channels,
        resize: cfg.resize,
    };
    let scanned = folder::scan(&opts.dir, None)?;
    let file_bytes: u64 = scanned
        .files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(p, e)))
        .sum::<Result<u64>>()?;

    let t0 = Instant::now();
    let loaded = folder::load(&scanned, shape, false)?;
    // Never 0: a rate is divided by it.
    let decode_s = t0.elapsed().as_secs_f64().max(1e-9);
    for (path, why) in &loaded.skipped {
        errln!("bench loader: skipped {}: {why}", path.display());
    }
    let n = loaded.dataset.len();
    if n == 0 {
        return Err(Error::data(&opts.dir, None, "no readable image to time"));
    }

    let loader = BatchLoader::new(
        Arc::new(loaded.dataset),
        LoaderConfig {
            mean: cfg.mean,
            std: cfg.std,
            channel_norm: cfg.channel_norm.clone(),
            photo: cfg.photo_augment(),
            ..LoaderConfig::train(cfg.batch_size, cfg.seed, 1, None)
        },
    )?;
    let t1 = Instant::now();
    let mut delivered = 0;
    for batch in loader {
        delivered += batch.len();
    }
    let epoch_s = t1.elapsed().as_secs_f64().max(1e-9);
    if delivered != n {
        return Err(Error::config(format!(
            "bench loader: the epoch delivered {delivered} images of {n}"
        )));
    }
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let record = LoaderRecord {
        implementation: "vitcore-loader".into(),
        preset: cfg.preset.clone(),
        images: n,
        file_mib: round(file_bytes as f64 / (1024.0 * 1024.0)),
        image_size: m.image_height,
        channels: m.channels,
        batch: cfg.batch_size,
        threads: rayon::current_num_threads(),
        decode_s: round(decode_s),
        decode_images_per_s: (n as f64 / decode_s).round(),
        epoch_s: round(epoch_s),
        epoch_images_per_s: (n as f64 / epoch_s).round(),
        commit: super::git_commit(),
    };
    super::print_record(&record, opts.json.as_deref())?;
    Ok(record)
}
