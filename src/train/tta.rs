//! Test-time augmentation (TTA): classify each image as the mean of the model's class
//! probabilities over a few shifted copies of it.
//!
//! ```text
//! p̄(c | x) = (1/V) Σ_v p(c | T_v(x)),        prediction = argmax_c p̄(c | x)
//! loss     = −(1/N) Σ_i ln p̄(y_i | x_i)
//! ```
//!
//! The views `T_v` are the image itself and its shifts by one and two pixels left, right, up
//! and down (the pixel rows or columns shifted in are 0: MNIST's background, a black edge on a
//! photo; [`Transform`]), the "averaging over translated copies" used for digits since LeCun et
//! al. 1998 and Simard et al. 2003. A patch-based ViT is not translation-equivariant (a shift
//! moves every patch's contents: with patch 7, shifts of 1 and 2 pixels put the grid at five
//! phases along each axis), so the copies are nine genuinely different looks at the digit: the
//! mean cancels part of the errors that hinge on where the patch grid happens to cut it. It
//! costs nine forward passes and no training; `vitcore eval --tta` and `vitcore predict --tta`
//! use it. (Measured on seven trained runs: these nine views beat the five of one-pixel shifts
//! by 0.12 points on average, and the 3 × 3 grid of one-pixel shifts by 0.04; BENCHMARKS.md.)

use super::{argmax, evaluate, EvalResult, TrainConfig};
use crate::autograd::ParamStore;
use crate::data::{Dataset, Transform};
use crate::error::Result;
use crate::nn::Vit;
use rayon::prelude::*;

/// The views: the image, then shifted one pixel right, left, down and up, then two pixels
/// right, left, down and up.
pub fn views() -> Vec<Transform> {
    let shift = |x: f32, y: f32| Transform {
        shift_x: x,
        shift_y: y,
        ..Transform::identity()
    };
    let mut v = vec![Transform::identity()];
    for d in [1.0, 2.0] {
        v.extend([shift(d, 0.0), shift(-d, 0.0), shift(0.0, d), shift(0.0, -d)]);
    }
    v
}

/// [`evaluate`] with test-time augmentation over `views` (see the module docs): the result's
/// probabilities, predictions, accuracy, confusion and loss are those of the mean probabilities.
/// The probabilities are always kept (they are what is averaged).
pub fn evaluate_tta(
    vit: &Vit,
    store: &ParamStore,
    ds: &Dataset,
    cfg: &TrainConfig,
    views: &[Transform],
) -> Result<EvalResult> {
    let (n, k, shape) = (ds.len(), vit.cfg.num_classes, ds.image_shape());
    let mut mean = vec![0f64; n * k];
    for view in views {
        let mut images = vec![0u8; ds.images.len()];
        images
            .par_chunks_mut(ds.image_len())
            .zip(ds.images.par_chunks(ds.image_len()))
            .for_each(|(dst, src)| view.warp_into(src, shape, 0, dst, |p| p));
        let copy = Dataset::new(images, ds.labels.clone(), shape, ds.num_classes)?;
        let r = evaluate(vit, store, &copy, cfg, true)?;
        for (acc, p) in mean.chunks_mut(k).zip(&r.probabilities) {
            for (a, &q) in acc.iter_mut().zip(p) {
                *a += q as f64 / views.len() as f64;
            }
        }
    }
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut predictions = Vec::with_capacity(n);
    let mut probabilities = Vec::with_capacity(n);
    for (i, p) in mean.chunks(k).enumerate() {
        let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
        let c = argmax(&p32);
        predictions.push(c as u32);
        if let Some(labels) = &ds.labels {
            let t = labels[i] as usize;
            confusion[t][c] += 1;
            correct += (t == c) as usize;
            // Floored like a softmax's smallest f32, so a confident mistake is a large finite loss.
            loss_sum -= p[t].max(f32::MIN_POSITIVE as f64).ln();
        }
        probabilities.push(p32);
    }
    let total = ds.labels.as_ref().map_or(0, |_| n);
    Ok(EvalResult {
        loss: loss_sum / total.max(1) as f64,
        accuracy: correct as f64 / total.max(1) as f64,
        correct,
        total,
        confusion,
        predictions,
        probabilities,
    })
}

/// [`evaluate`], or [`evaluate_tta`] over [`views`] when `tta` is set.
pub fn evaluate_maybe_tta(
    vit: &Vit,
    store: &ParamStore,
    ds: &Dataset,
    cfg: &TrainConfig,
    keep_probs: bool,
    tta: bool,
) -> Result<EvalResult> {
    match tta {
        true => evaluate_tta(vit, store, ds, cfg, &views()),
        false => evaluate(vit, store, ds, cfg, keep_probs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::build_model;

    /// A small random model and 20 random 12x12 "digits" with labels.
    fn setup() -> (TrainConfig, Vit, ParamStore, Dataset) {
        let mut cfg = TrainConfig::default_preset();
        (cfg.model.image_height, cfg.model.image_width, cfg.model.patch) = (12, 12, 4);
        (cfg.model.embed_dim, cfg.model.depth, cfg.model.heads, cfg.model.mlp_dim) = (16, 1, 2, 32);
        cfg.eval_batch_size = 7; // batches that do not divide the set
        let (vit, store) = build_model(&cfg).unwrap();
        let mut rng = crate::rng::Rng::new(3);
        let images: Vec<u8> = (0..20 * 144).map(|_| (rng.uniform() * 255.0) as u8).collect();
        let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
        let ds = Dataset::new(images, Some(labels), [1, 12, 12], 10).unwrap();
        (cfg, vit, store, ds)
    }

    #[test]
    fn one_identity_view_is_the_plain_evaluation() {
        let (cfg, vit, store, ds) = setup();
        let plain = evaluate(&vit, &store, &ds, &cfg, true).unwrap();
        let one = evaluate_tta(&vit, &store, &ds, &cfg, &[Transform::identity()]).unwrap();
        assert_eq!(one.predictions, plain.predictions);
        assert_eq!(one.probabilities, plain.probabilities);
        assert_eq!(
            (one.correct, one.total, &one.confusion),
            (plain.correct, plain.total, &plain.confusion)
        );
        assert!(
            (one.loss - plain.loss).abs() < 1e-5 * plain.loss,
            "{} vs {}",
            one.loss,
            plain.loss
        );
    }

    #[test]
    fn nine_views_average_the_probabilities_of_the_shifted_images() {
        let (cfg, vit, store, ds) = setup();
        let views = views();
        assert_eq!(views.len(), 9);
        // Distinct: the identity and eight shifts by 1 or 2 pixels along one axis.
        for (i, v) in views.iter().enumerate() {
            assert!(views[..i].iter().all(|w| w != v), "view {i} repeats");
            let (x, y) = (v.shift_x.abs(), v.shift_y.abs());
            assert!(
                i == 0 || (x == 0.0) != (y == 0.0) && (x + y == 1.0 || x + y == 2.0),
                "{v:?}"
            );
        }
        let tta = evaluate_tta(&vit, &store, &ds, &cfg, &views).unwrap();
        // Each view by hand: shift the images, evaluate, average.
        let mut mean = vec![0f64; 20 * 10];
        for v in &views {
            let images: Vec<u8> = ds
                .images
                .chunks(144)
                .flat_map(|im| v.warp_u8(im, [1, 12, 12], 0))
                .collect();
            let shifted = Dataset::new(images, ds.labels.clone(), [1, 12, 12], 10).unwrap();
            assert!(v == &Transform::identity() || shifted.images != ds.images);
            let r = evaluate(&vit, &store, &shifted, &cfg, true).unwrap();
            for (m, p) in mean.iter_mut().zip(r.probabilities.concat()) {
                *m += p as f64 / 9.0;
            }
        }
        for (got, want) in tta.probabilities.concat().iter().zip(&mean) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let labels = ds.labels.as_ref().unwrap();
        let loss: f64 = -(0..20).map(|i| mean[i * 10 + labels[i] as usize].ln()).sum::<f64>() / 20.0;
        assert!((tta.loss - loss).abs() < 1e-6, "{} vs {loss}", tta.loss);
        let correct = tta
            .predictions
            .iter()
            .zip(labels)
            .filter(|(p, &t)| **p == t as u32)
            .count();
        assert_eq!((tta.correct, tta.total), (correct, 20));
        assert_eq!(tta.confusion.iter().flatten().sum::<usize>(), 20);
        assert!(tta
            .predictions
            .iter()
            .zip(&tta.probabilities)
            .all(|(&p, row)| row.iter().all(|&q| q <= row[p as usize])));
    }
}
