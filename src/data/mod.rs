//! Data: reading MNIST-style digit images, augmenting them, and batching them for training.
//!
//! Everything here works on one in-memory type, [`Dataset`]: `u8` pixels laid out `N x C x H x W`
//! (row-major, one image after another) plus an optional label per image. Keeping raw bytes (not
//! `f32`) makes MNIST's 60 000 training images 47 MB instead of 188 MB, and lets augmentation work
//! on the same pixels torchvision's PIL pipeline works on; conversion to normalised `f32` happens
//! per batch in [`loader`].
//!
//! - [`idx`]: the original MNIST files (IDX format, gzip-compressed or raw) and [`load_mnist`].
//! - [`csv`]: Kaggle's "digit-recognizer" `train.csv` / `test.csv`.
//! - [`image`]: one image for predicting a single digit (read as a person sees it), and a PNG
//!   writer for debugging.
//! - [`folder`]: photos in one folder per class (JPEG/PNG of any size and mode), decoded and
//!   resized in parallel, and their stratified split; [`photo_augment`]: crop, flip, rotation
//!   and colour jitter for photos.
//! - [`augment`]: random rotation / translation with nearest-neighbour sampling.
//! - [`loader`]: shuffled, normalised `f32` batches prepared on a background thread.
//!
//! Every malformed input becomes an [`Error`] naming the file, the line (CSV) and the
//! expected-vs-found values; nothing in this module panics on bad data.

pub mod augment;
pub mod csv;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod photo_augment;

pub use augment::{Augment, Elastic, Transform};
pub use idx::{load_mnist, load_mnist_test, mnist_paths, read_idx_images, read_idx_labels, IdxImages};
pub use loader::{Batch, BatchLoader, LoaderConfig};
pub use photo_augment::PhotoAugment;

/// ImageNet's per-channel `[mean, std]` (R, G, B) of pixels in `[0, 1]`: the normalisation
/// timm's and torchvision's pretrained ViTs were trained with (`IMAGENET_DEFAULT_MEAN/STD`).
pub const IMAGENET_NORM: [[f32; 2]; 3] = [[0.485, 0.229], [0.456, 0.224], [0.406, 0.225]];

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A set of images with (optionally) one class label each.
///
/// `images` holds `len() * channels * height * width` bytes: image `i` is the slice
/// `images[i * image_len() .. (i + 1) * image_len()]`, channel-major then row-major inside it.
/// `labels` is `None` for unlabeled data (Kaggle's `test.csv`); otherwise it has one entry per
/// image and every entry is `< num_classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Option<Vec<u8>>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
}

impl Dataset {
    /// Build a dataset, checking that the buffer sizes and the labels are consistent.
    pub fn new(
        images: Vec<u8>,
        labels: Option<Vec<u8>>,
        [channels, height, width]: [usize; 3],
        num_classes: usize,
    ) -> Result<Dataset> {
        let image_len = channels * height * width;
        if image_len == 0 {
            return Err(Error::config(format!(
                "dataset: image shape {channels}x{height}x{width} (CxHxW) has a zero dimension"
            )));
        }
        if !images.len().is_multiple_of(image_len) {
            return Err(Error::config(format!(
                "dataset: {} pixel bytes is not a whole number of {channels}x{height}x{width} images",
                images.len()
            )));
        }
        let n = images.len() / image_len;
        if let Some(labels) = &labels {
            check_labels(labels, n, num_classes)?;
        }
        Ok(Dataset {
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / self.image_len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The `[C, H, W]` shape of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The pixels of image `i` (`C x H x W`). Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The label of image `i`, or `None` for unlabeled data.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// A new dataset with the images at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::config(format!(
                "dataset subset: index {bad} is out of range for a dataset of {n} images"
            )));
        }
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(Dataset {
            images,
            labels,
            ..self.empty_like()
        })
    }

    /// Split into `(train, val)` with a seeded shuffle, like scikit-learn's
    /// `train_test_split(..., test_size=val_fraction, shuffle=True)`:
    ///
    /// - `n_val = ceil(val_fraction * len)` (scikit-learn rounds the test side up), `n_train` the rest;
    /// - one random permutation of `0..len` is drawn from `Rng::new(seed)` (Fisher–Yates);
    ///   its first `n_val` entries become `val` and the remaining ones `train`, both in
    ///   permutation order. The split is not stratified.
    ///
    /// `val_fraction` must be in `[0, 1)`; `0.0` gives an empty `val`. The same seed always gives
    /// the same split (the permutation differs from NumPy's, so indices differ from sklearn's).
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::config(format!(
                "dataset split: val_fraction must be in [0, 1), found {val_fraction}"
            )));
        }
        let n = self.len();
        let n_val = (val_fraction * n as f64).ceil() as usize;
        if n_val >= n && n > 0 {
            return Err(Error::config(format!(
                "dataset split: val_fraction {val_fraction} of {n} images leaves no training images"
            )));
        }
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(seed).shuffle(&mut order);
        let (val_idx, train_idx) = order.split_at(n_val);
        Ok((self.subset(train_idx)?, self.subset(val_idx)?))
    }

    /// How many images carry each label `0..num_classes` (all zeros for unlabeled data).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        for &l in self.labels.iter().flatten() {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A dataset with this one's shape and classes but no images.
    fn empty_like(&self) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: self.labels.as_ref().map(|_| Vec::new()),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }
}

/// One label per image, each `< num_classes`.
fn check_labels(labels: &[u8], num_images: usize, num_classes: usize) -> Result<()> {
    if labels.len() != num_images {
        return Err(Error::config(format!(
            "dataset: {} labels for {num_images} images (expected one label per image)",
            labels.len()
        )));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(Error::config(format!(
            "dataset: label {l} of image {i} is outside 0..{num_classes}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` 1x2x2 images whose pixels all equal the image index; label = index % 3.
    fn toy(n: usize) -> Dataset {
        let images = (0..n).flat_map(|i| [i as u8; 4]).collect();
        let labels = (0..n).map(|i| (i % 3) as u8).collect();
        Dataset::new(images, Some(labels), [1, 2, 2], 3).unwrap()
    }

    #[test]
    fn new_rejects_inconsistent_sizes_and_labels() {
        let e = Dataset::new(vec![0; 5], None, [1, 2, 2], 10).unwrap_err();
        assert!(e.to_string().contains("5 pixel bytes"), "{e}");
        let e = Dataset::new(vec![0; 8], Some(vec![0]), [1, 2, 2], 10).unwrap_err();
        assert!(e.to_string().contains("1 labels for 2 images"), "{e}");
        let e = Dataset::new(vec![0; 8], Some(vec![0, 3]), [1, 2, 2], 3).unwrap_err();
        assert!(e.to_string().contains("label 3 of image 1"), "{e}");
    }

    #[test]
    fn subset_copies_images_and_labels_in_order() {
        let d = toy(5);
        let s = d.subset(&[4, 0, 4]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.images, vec![4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4]);
        assert_eq!(s.labels, Some(vec![1, 0, 1]));
        let e = d.subset(&[5]).unwrap_err();
        assert!(e.to_string().contains("index 5"), "{e}");
    }

    #[test]
    fn split_is_a_seeded_partition_with_ceil_val_size() {
        let d = toy(10);
        let (tr, va) = d.split(0.25, 7).unwrap();
        assert_eq!((tr.len(), va.len()), (7, 3)); // ceil(2.5) = 3
        let mut seen: Vec<u8> = tr.images.iter().chain(&va.images).step_by(4).copied().collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert_eq!(d.split(0.25, 7).unwrap(), (tr.clone(), va.clone()));
        assert_ne!(d.split(0.25, 8).unwrap().1, va);
        assert_eq!(d.split(0.0, 1).unwrap().1.len(), 0);
        assert!(d.split(1.0, 1).is_err());
        assert!(d.split(-0.1, 1).is_err());
        assert!(d.split(0.95, 1).is_err()); // ceil(9.5) = 10 leaves nothing to train on
    }

    #[test]
    fn class_counts_counts_labels() {
        assert_eq!(toy(7).class_counts(), vec![3, 2, 2]);
        let unlabeled = Dataset::new(vec![0; 8], None, [1, 2, 2], 3).unwrap();
        assert_eq!(unlabeled.class_counts(), vec![0, 0, 0]);
    }
}
