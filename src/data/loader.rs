//! Batching: shuffled, optionally augmented, normalised `f32` batches built on a background thread.
//!
//! One [`BatchLoader`] is one pass (epoch) over a [`Dataset`]:
//!
//! 1. **Order**: `0..len`, shuffled (if `shuffle`) by a generator seeded with
//!    `derive_seed(seed, epoch)`, so every epoch has its own, reproducible order ([`epoch_order`]).
//! 2. **Batches**: consecutive chunks of `batch_size` indices of that order. The last chunk may be
//!    smaller; it is kept unless `drop_last` (PyTorch `DataLoader` semantics).
//! 3. **Pixels → f32**: optional augmentation (seeded per `(seed, epoch, dataset index)`, see
//!    [`super::augment`]), then `x = (pixel / 255 - mean) / std`. With the original setup's
//!    `Normalize(0.5, 0.5)` this maps 0..255 onto exactly -1..1. A 256-entry lookup table holds the
//!    normalised value of every byte, so the formula is evaluated once per byte value.
//! 4. **Prefetching**: a worker thread builds batches ahead of time and hands them over through a
//!    bounded `sync_channel` (depth `prefetch`), so the training step rarely waits for data and at
//!    most `prefetch + 2` batches exist at once. Inside a batch, images are augmented in parallel
//!    with rayon.
//!
//! Dropping the loader early is safe: it drops the receiving end first (which makes the worker's
//! next `send` fail, so it stops) and then joins the thread.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rayon::prelude::*;

use super::{Augment, Dataset, PhotoAugment};
use crate::error::{Error, Result};
use crate::rng::{derive_seed, Rng};

/// How to batch one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (the last one may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Shuffle the order (training) or keep dataset order (evaluation).
    pub shuffle: bool,
    /// Seed for shuffling and augmentation.
    pub seed: u64,
    /// Epoch number: mixed into the seed so each epoch differs.
    pub epoch: u64,
    /// Random augmentation, or `None` for the images as they are.
    pub augment: Option<Augment>,
    /// Normalisation: `x = (pixel / 255 - mean) / std`.
    pub mean: f32,
    pub std: f32,
    /// Per-channel normalisation `[mean, std]` for each channel, used instead of `mean`/`std`
    /// when set (ImageNet's for a pretrained model, see `crate::data::IMAGENET_NORM`).
    pub channel_norm: Option<Vec<[f32; 2]>>,
    /// Photo augmentation (bilinear crop, flip, rotation, colour jitter:
    /// [`super::photo_augment`]), used instead of `augment` when set.
    pub photo: Option<PhotoAugment>,
    /// Drop the last batch if it is smaller than `batch_size`.
    pub drop_last: bool,
    /// How many finished batches the worker may keep queued (at least 1).
    pub prefetch: usize,
    /// Leave out this many batches at the start of the epoch (resuming inside an epoch): the
    /// rest are exactly the batches an uninterrupted epoch yields after them.
    pub skip: usize,
}

impl Default for LoaderConfig {
    /// Batches of 64 in dataset order, no augmentation, `Normalize(0.5, 0.5)`, keep the last batch.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            shuffle: false,
            seed: 0,
            epoch: 0,
            augment: None,
            mean: 0.5,
            std: 0.5,
            channel_norm: None,
            photo: None,
            drop_last: false,
            prefetch: 2,
            skip: 0,
        }
    }
}

impl LoaderConfig {
    /// Training: shuffled with `seed` for `epoch`, optionally augmented.
    pub fn train(batch_size: usize, seed: u64, epoch: u64, augment: Option<Augment>) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            epoch,
            augment,
            ..LoaderConfig::default()
        }
    }

    /// Evaluation: dataset order, no augmentation.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            ..LoaderConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("loader: batch_size must be at least 1, found 0"));
        }
        let per_channel = self.channel_norm.iter().flatten().copied();
        let std_ok = |s: f32| s.is_finite() && s > 0.0;
        if per_channel.clone().any(|[m, s]| !m.is_finite() || !std_ok(s)) {
            return Err(Error::config(format!(
                "loader: per-channel normalisation needs finite means and finite stds > 0, found {:?}",
                self.channel_norm
            )));
        }
        if let Some(p) = &self.photo {
            p.validate()?;
        }
        if !self.mean.is_finite() || !self.std.is_finite() || self.std <= 0.0 {
            return Err(Error::config(format!(
                "loader: normalisation needs a finite mean and a finite std > 0, found mean {} std {}",
                self.mean, self.std
            )));
        }
        self.augment.as_ref().map_or(Ok(()), Augment::validate)
    }
}

/// One batch, ready for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `shape[0] * shape[1] * shape[2] * shape[3]` normalised values, `[B, C, H, W]` row-major.
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    /// One label per image; empty when the dataset is unlabeled.
    pub labels: Vec<u32>,
    /// Which dataset image each row is (e.g. for writing predictions in dataset order).
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// The order in which one epoch visits the dataset: `0..len`, shuffled when asked.
pub fn epoch_order(len: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        Rng::new(derive_seed(seed, epoch)).shuffle(&mut order);
    }
    order
}

/// Number of batches an epoch of `len` images yields.
pub fn batches_per_epoch(len: usize, batch_size: usize, drop_last: bool) -> usize {
    match drop_last {
        true => len / batch_size,
        false => len.div_ceil(batch_size),
    }
}

/// An iterator over one epoch's [`Batch`]es, prepared on a background thread.
pub struct BatchLoader {
    receiver: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    num_batches: usize,
    yielded: usize,
}

impl BatchLoader {
    /// Start preparing the epoch described by `config` on a worker thread.
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<BatchLoader> {
        config.validate()?;
        let order = epoch_order(dataset.len(), config.shuffle, config.seed, config.epoch);
        let num_batches = batches_per_epoch(dataset.len(), config.batch_size, config.drop_last);
        let skip = config.skip;
        let (sender, receiver) = sync_channel(config.prefetch.max(1));
        let builder = BatchBuilder::new(dataset, config);
        let worker = std::thread::Builder::new()
            .name("vitcore-loader".into())
            .spawn(move || builder.run(&order, num_batches, sender))
            .map_err(|e| Error::config(format!("loader: cannot start the worker thread: {e}")))?;
        Ok(BatchLoader {
            receiver: Some(receiver),
            worker: Some(worker),
            num_batches,
            yielded: skip.min(num_batches),
        })
    }

    /// Batches in this epoch (including any already consumed or skipped).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// Stop the worker: drop our end of the channel (its next `send` fails), then join it.
    /// A panic in the worker is a bug; it is re-raised here rather than silently ending the epoch.
    fn shut_down(&mut self) {
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            if let Err(panic) = worker.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

/// The next batch from the worker. On a rayon worker thread (the command runs on one: see
/// `backend::cpu::on_worker_pool`), waiting is spent on the pool's pending jobs, among them
/// the worker's own augmentation loop: a blocked `recv` would leave that loop one thread short.
fn receive(rx: &Receiver<Batch>) -> std::result::Result<Batch, ()> {
    if rayon::current_thread_index().is_none() {
        return rx.recv().map_err(|_| ());
    }
    loop {
        match rx.try_recv() {
            Ok(batch) => return Ok(batch),
            Err(TryRecvError::Disconnected) => return Err(()),
            Err(TryRecvError::Empty) => {}
        }
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            // Nothing to help with: wait briefly for the batch, then look again.
            match rx.recv_timeout(Duration::from_micros(200)) {
                Ok(batch) => return Ok(batch),
                Err(RecvTimeoutError::Disconnected) => return Err(()),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match receive(self.receiver.as_ref()?) {
            Ok(batch) => {
                self.yielded += 1;
                Some(batch)
            }
            Err(_) => {
                self.shut_down();
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches - self.yielded;
        (left, Some(left))
    }
}

impl ExactSizeIterator for BatchLoader {}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What the worker thread needs to turn lists of indices into batches.
struct BatchBuilder {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
    /// `normalised[c][p] = (p / 255 - mean_c) / std_c` for every byte value `p` (one table for
    /// all channels without per-channel normalisation).
    normalised: Vec<[f32; 256]>,
}

impl BatchBuilder {
    fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> BatchBuilder {
        let norms = match &config.channel_norm {
            Some(per) => per.clone(),
            None => vec![[config.mean, config.std]],
        };
        let normalised = norms
            .iter()
            .map(|&[m, s]| std::array::from_fn(|p| normalise(p as u8, m, s)))
            .collect();
        BatchBuilder {
            dataset,
            config,
            normalised,
        }
    }

    /// The worker loop: build and send batches until done or the receiver is gone.
    fn run(&self, order: &[usize], num_batches: usize, sender: SyncSender<Batch>) {
        for indices in order
            .chunks(self.config.batch_size)
            .take(num_batches)
            .skip(self.config.skip)
        {
            if sender.send(self.build(indices)).is_err() {
                return; // the loader was dropped: stop early
            }
        }
    }

    fn build(&self, indices: &[usize]) -> Batch {
        let d = &self.dataset;
        let mut images = vec![0f32; indices.len() * d.image_len()];
        images
            .par_chunks_mut(d.image_len())
            .zip(indices.par_iter())
            .with_min_len(8)
            .for_each(|(dst, &i)| self.fill_image(i, dst));
        let labels = match &d.labels {
            Some(l) => indices.iter().map(|&i| l[i] as u32).collect(),
            None => Vec::new(),
        };
        Batch {
            images,
            shape: [indices.len(), d.channels, d.height, d.width],
            labels,
            indices: indices.to_vec(),
        }
    }

    /// Write image `i`, augmented if configured, normalised, into `dst`.
    fn fill_image(&self, i: usize, dst: &mut [f32]) {
        let src = self.dataset.image(i);
        let key = (self.config.seed, self.config.epoch, i as u64);
        if self.normalised.len() > 1 || self.config.photo.is_some() {
            return self.fill_photo(src, key, dst);
        }
        let table = &self.normalised[0];
        let lookup = |p: u8| table[p as usize];
        match &self.config.augment {
            Some(aug) => aug.apply_into(src, self.dataset.image_shape(), key, dst, lookup),
            None => dst.iter_mut().zip(src).for_each(|(d, &p)| *d = lookup(p)),
        }
    }

    /// A photo: augmented (bilinear, as [`PhotoAugment::apply`]) or not, normalised per channel.
    fn fill_photo(&self, src: &[u8], key: (u64, u64, u64), dst: &mut [f32]) {
        let plane = self.dataset.height * self.dataset.width;
        let norm = |c: usize| {
            let per = self.config.channel_norm.as_ref().and_then(|n| n.get(c));
            per.copied().unwrap_or([self.config.mean, self.config.std])
        };
        match &self.config.photo {
            Some(aug) => {
                aug.apply(src, self.dataset.image_shape(), key, dst);
                for (c, plane_px) in dst.chunks_mut(plane).enumerate() {
                    let [m, s] = norm(c);
                    plane_px.iter_mut().for_each(|v| *v = (*v / 255.0 - m) / s);
                }
            }
            None => {
                for (c, (d, s)) in dst.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
                    let table = &self.normalised[c.min(self.normalised.len() - 1)];
                    d.iter_mut().zip(s).for_each(|(d, &p)| *d = table[p as usize]);
                }
            }
        }
    }
}

/// `(pixel / 255 - mean) / std`, in f32.
pub fn normalise(pixel: u8, mean: f32, std: f32) -> f32 {
    (pixel as f32 / 255.0 - mean) / std
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `n` 1x1x2 images whose two pixels spell the index (low byte, high byte); label = index % 10.
    fn indexed(n: usize) -> Arc<Dataset> {
        let images = (0..n).flat_map(|i| [(i % 256) as u8, (i / 256) as u8]).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Arc::new(Dataset::new(images, Some(labels), [1, 1, 2], 10).unwrap())
    }

    /// Raw pixels back from `x = p / 255` (mean 0, std 1).
    fn decode(x: f32) -> usize {
        (x * 255.0).round() as usize
    }

    fn raw(batch_size: usize, shuffle: bool, epoch: u64, drop_last: bool) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle,
            seed: 11,
            epoch,
            mean: 0.0,
            std: 1.0,
            drop_last,
            ..LoaderConfig::default()
        }
    }

    /// The dataset indices an epoch visits, decoded from the pixels (not from `Batch::indices`).
    fn visited(d: &Arc<Dataset>, cfg: LoaderConfig) -> Vec<usize> {
        let mut out = Vec::new();
        for b in BatchLoader::new(d.clone(), cfg).unwrap() {
            for (k, px) in b.images.chunks(2).enumerate() {
                let i = decode(px[0]) + 256 * decode(px[1]);
                assert_eq!(b.indices[k], i, "indices must name the image");
                assert_eq!(b.labels[k], (i % 10) as u32, "label must travel with its image");
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn every_example_once_per_epoch() {
        let d = indexed(1000);
        for (shuffle, drop_last) in [(true, false), (false, false), (true, true)] {
            let seen = visited(&d, raw(64, shuffle, 3, drop_last));
            let unique: BTreeSet<usize> = seen.iter().copied().collect();
            assert_eq!(unique.len(), seen.len(), "duplicates");
            let expected = if drop_last { 960 } else { 1000 };
            assert_eq!(seen.len(), expected);
            if !shuffle {
                assert_eq!(seen, (0..1000).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn skip_leaves_out_the_first_batches_and_yields_the_rest_unchanged() {
        let d = indexed(1000);
        let whole = visited(&d, raw(64, true, 2, false));
        for skip in [0, 1, 5, 15, 16, 40] {
            let cfg = LoaderConfig {
                skip,
                ..raw(64, true, 2, false)
            };
            let loader = BatchLoader::new(d.clone(), cfg.clone()).unwrap();
            assert_eq!(loader.num_batches(), 16);
            assert_eq!(loader.len(), 16 - skip.min(16), "skip {skip}");
            let rest = visited(&d, cfg);
            assert_eq!(rest, whole[(64 * skip).min(1000)..], "skip {skip}");
        }
    }

    #[test]
    fn shuffle_differs_per_epoch_and_repeats_per_seed() {
        let d = indexed(500);
        let e0 = visited(&d, raw(32, true, 0, false));
        let e1 = visited(&d, raw(32, true, 1, false));
        assert_ne!(e0, e1);
        assert_ne!(e0, (0..500).collect::<Vec<_>>());
        assert_eq!(e0, visited(&d, raw(32, true, 0, false)));
        let other_seed = LoaderConfig {
            seed: 12,
            ..raw(32, true, 0, false)
        };
        assert_ne!(e0, visited(&d, other_seed));
    }

    #[test]
    fn normalisation_is_exact() {
        let images: Vec<u8> = (0..=255).collect();
        let d = Arc::new(Dataset::new(images, Some(vec![0]), [1, 16, 16], 10).unwrap());
        let b = BatchLoader::new(d, LoaderConfig::eval(1)).unwrap().next().unwrap();
        assert_eq!(b.shape, [1, 1, 16, 16]);
        for p in 0..=255u8 {
            assert_eq!(b.images[p as usize], (p as f32 / 255.0 - 0.5) / 0.5, "pixel {p}");
        }
        assert_eq!((b.images[0], b.images[255]), (-1.0, 1.0));
    }

    #[test]
    fn last_partial_batch_is_kept_or_dropped() {
        let d = indexed(10);
        let sizes = |drop_last| {
            let loader = BatchLoader::new(d.clone(), raw(4, true, 0, drop_last)).unwrap();
            let n = loader.num_batches();
            let batches: Vec<Batch> = loader.collect();
            assert_eq!(batches.len(), n);
            for b in &batches {
                assert_eq!(b.images.len(), b.len() * 2);
                assert_eq!(b.labels.len(), b.len());
            }
            batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>()
        };
        assert_eq!(sizes(false), vec![4, 4, 2]);
        assert_eq!(sizes(true), vec![4, 4]);
        assert_eq!(batches_per_epoch(12, 4, false), 3);
        assert_eq!(batches_per_epoch(0, 4, false), 0);
    }

    #[test]
    fn dropping_early_does_not_hang() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let d = indexed(10_000);
            let mut loader = BatchLoader::new(
                d,
                LoaderConfig {
                    prefetch: 1,
                    ..raw(8, true, 0, false)
                },
            )
            .unwrap();
            let first = loader.next().unwrap();
            std::thread::sleep(Duration::from_millis(50)); // let the worker block on a full channel
            drop(loader);
            done_tx.send(first.len()).unwrap();
        });
        let got = done_rx.recv_timeout(Duration::from_secs(20));
        assert_eq!(got, Ok(8), "dropping a loader mid-epoch must stop its worker promptly");
    }

    /// Read from a rayon worker (as the command line does), the loader waits by running pool
    /// jobs: it yields the same batches as from a plain thread, ends, and can be dropped early.
    #[test]
    fn a_loader_read_on_a_pool_worker_yields_the_same_batches() {
        let d = indexed(3_000);
        let cfg = || LoaderConfig {
            augment: Some(Augment {
                rotate_deg: 10.0,
                shift_px: 2.0,
                ..Augment::default()
            }),
            ..raw(64, true, 3, false)
        };
        let read = move |d: Arc<Dataset>| {
            BatchLoader::new(d, cfg())
                .unwrap()
                .map(|b| b.images)
                .collect::<Vec<_>>()
        };
        let plain = read(d.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let on_worker = rayon::scope(|_| {
                assert!(rayon::current_thread_index().is_some());
                let mut early = BatchLoader::new(d.clone(), cfg()).unwrap();
                early.next().unwrap();
                drop(early); // mid-epoch, from the worker
                read(d.clone())
            });
            done_tx.send(on_worker).unwrap();
        });
        let on_worker = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the loader hung on a pool worker");
        assert_eq!(on_worker.len(), 3_000usize.div_ceil(64));
        assert!(on_worker == plain, "batches differ when read on a pool worker");
    }

    #[test]
    fn augmentation_depends_on_index_not_on_batching() {
        let mut images = vec![0u8; 20 * 64];
        for (k, p) in images.iter_mut().enumerate() {
            *p = (k * 37 % 256) as u8;
        }
        let d = Arc::new(Dataset::new(images, None, [1, 8, 8], 10).unwrap());
        let cfg = |b| {
            LoaderConfig::train(
                b,
                5,
                2,
                Some(Augment {
                    rotate_deg: 30.0,
                    shift_px: 1.0,
                    ..Augment::default()
                }),
            )
        };
        let by_index = |b| {
            let mut rows = vec![Vec::new(); 20];
            for batch in BatchLoader::new(d.clone(), cfg(b)).unwrap() {
                assert!(batch.labels.is_empty(), "unlabeled data has no labels");
                for (k, img) in batch.images.chunks(64).enumerate() {
                    rows[batch.indices[k]] = img.to_vec();
                }
            }
            rows
        };
        let a = by_index(3);
        assert_eq!(a, by_index(7));
        let aug = cfg(3).augment.unwrap();
        let expected: Vec<f32> = aug
            .apply_u8(d.image(4), [1, 8, 8], 5, 2, 4)
            .into_iter()
            .map(|p| normalise(p, 0.5, 0.5))
            .collect();
        assert_eq!(a[4], expected);
        assert_ne!(
            a[4],
            d.image(4).iter().map(|&p| normalise(p, 0.5, 0.5)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let d = indexed(4);
        let e = BatchLoader::new(d.clone(), LoaderConfig::eval(0)).err().unwrap();
        assert!(e.to_string().contains("batch_size"), "{e}");
        let e = BatchLoader::new(
            d,
            LoaderConfig {
                std: 0.0,
                ..LoaderConfig::eval(2)
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("std"), "{e}");
    }
}
