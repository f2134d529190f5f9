//! The margins of every training image through training, for the label audit
//! (`vitcore audit`, `crate::inspect::audit`).
//!
//! The **area under the margin** (AUM; Pleiss, Zhang, Elenberg and Weinberger, "Identifying
//! Mislabeled Data using the Area Under the Margin Ranking", NeurIPS 2020) of an image is the
//! mean, over the epochs, of its margin when the training step saw it:
//!
//! ```text
//! margin = z[given label] − max over the other classes k of z[k]        (z: the logits)
//! ```
//! A correctly labelled image is soon pushed to a positive margin by the gradients of every image
//! like it; a mislabelled one is pulled towards its given label only by its own gradient, against
//! all its look-alikes, so its margin stays low or negative until (if ever) the network memorises
//! it. Ranking by AUM, lowest first, puts the likely label errors on top, from the one training
//! run, at the cost of reading logits the step computes anyway.
//!
//! Per training image (index in the training split) this keeps the sum of its margins, the sum of
//! its logits (the class with the largest mean logit besides the given one is the suggested
//! label) and how many times it was seen. They are saved with the run's `last.safetensors` under
//! [`PREFIX`], so an interrupted and resumed run records exactly what an uninterrupted one does.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::Path;

/// Names of the checkpoint tensors holding the margins start with this.
pub const PREFIX: &str = "margins.";

/// The running sums for `n` training images of `k` classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Margins {
    k: usize,
    /// Σ margin, per image.
    pub sum: Vec<f32>,
    /// Σ logits, per image and class (`n × k`).
    pub logits: Vec<f32>,
    /// Times seen, per image.
    pub count: Vec<f32>,
}

impl Margins {
    pub fn new(n: usize, k: usize) -> Margins {
        Margins {
            k,
            sum: vec![0.0; n],
            logits: vec![0.0; n * k],
            count: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.count.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.k
    }

    /// Add one step's logits (`indices.len() × k`, row `r` being image `indices[r]` with label
    /// `labels[r]`).
    pub fn record(&mut self, indices: &[usize], logits: &[f32], labels: &[u32]) {
        for ((&i, row), &y) in indices.iter().zip(logits.chunks(self.k)).zip(labels) {
            let other = row
                .iter()
                .enumerate()
                .filter(|&(c, _)| c != y as usize)
                .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
            self.sum[i] += row[y as usize] - other;
            for (acc, &v) in self.logits[i * self.k..(i + 1) * self.k].iter_mut().zip(row) {
                *acc += v;
            }
            self.count[i] += 1.0;
        }
    }

    /// The area under the margin of image `i` (NaN if it was never seen).
    pub fn aum(&self, i: usize) -> f32 {
        self.sum[i] / self.count[i]
    }

    /// The class with the largest mean logit other than `given`.
    pub fn suggested(&self, i: usize, given: usize) -> usize {
        let row = &self.logits[i * self.k..(i + 1) * self.k];
        (0..self.k)
            .filter(|&c| c != given)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .unwrap_or(0)
    }

    /// The checkpoint tensors: `margins.sum [n]`, `margins.logits [n, k]`, `margins.count [n]`.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let n = self.len();
        Ok(vec![
            (format!("{PREFIX}sum"), Tensor::from_vec(self.sum.clone(), &[n])?),
            (
                format!("{PREFIX}logits"),
                Tensor::from_vec(self.logits.clone(), &[n, self.k])?,
            ),
            (format!("{PREFIX}count"), Tensor::from_vec(self.count.clone(), &[n])?),
        ])
    }

    /// The margins a checkpoint (`path`, for errors) holds for `n` images of `k` classes;
    /// `None` when it holds none (a run from before they were recorded).
    pub fn from_tensors(path: &Path, tensors: &[(String, Tensor)], n: usize, k: usize) -> Result<Option<Margins>> {
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(t, _)| t == &format!("{PREFIX}{name}"))
                .map(|(_, t)| t)
        };
        let (Some(sum), Some(logits), Some(count)) = (get("sum"), get("logits"), get("count")) else {
            return Ok(None);
        };
        if sum.shape() != [n] || logits.shape() != [n, k] || count.shape() != [n] {
            return Err(Error::checkpoint(
                path,
                format!(
                    "its margins are for {:?} images and {:?} logits, but the run has {n} training images of {k} classes",
                    sum.shape(),
                    logits.shape()
                ),
            ));
        }
        Ok(Some(Margins {
            k,
            sum: sum.values()?,
            logits: logits.values()?,
            count: count.values()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_average_the_given_logit_against_the_best_other() {
        let mut m = Margins::new(2, 3);
        // Image 1 labelled 0: margins 1 - 3 = -2, then 4 - 2 = 2; image 0 never seen.
        m.record(&[1], &[1.0, 3.0, 0.0], &[0]);
        m.record(&[1], &[4.0, 2.0, 1.0], &[0]);
        assert_eq!(m.aum(1), 0.0);
        assert!(m.aum(0).is_nan());
        // Mean logits (2.5, 2.5, 0.5): besides the given 0, class 1.
        assert_eq!(m.suggested(1, 0), 1);
        let t = m.tensors().unwrap();
        let back = Margins::from_tensors(Path::new("x"), &t, 2, 3).unwrap().unwrap();
        assert_eq!(back, m);
        assert!(Margins::from_tensors(Path::new("x"), &t, 3, 3).is_err());
        assert_eq!(Margins::from_tensors(Path::new("x"), &[], 2, 3).unwrap(), None);
    }
}
