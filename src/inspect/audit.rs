//! `vitcore audit`: rank a run's training images by how likely their given label is wrong.
//!
//! The method is the **area under the margin** (AUM) of Pleiss, Zhang, Elenberg and Weinberger,
//! "Identifying Mislabeled Data using the Area Under the Margin Ranking" (NeurIPS 2020): the
//! mean over training of `logit[given label] − the largest other logit`, recorded for every
//! training image by the training loop itself (`crate::train::margins`), so the audit needs only
//! the one training run. The lower an image's AUM, the more the network, learning from all the
//! other images, disagreed with its label; a negative AUM means it mostly preferred another
//! class. The suggested label is the class with the largest mean logit besides the given one.
//! (Pleiss et al. also set a cut-off with deliberately mislabelled "threshold samples"; this
//! audit ranks instead and leaves the reading of the top to a person.)
//!
//! Only the images the run trained on are audited: its validation split is never trained on.

use crate::checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::rng::Rng;
use crate::train::{DataSource, Margins, TrainConfig};
use crate::viz::tiles::{self, Tile};
use crate::viz::{GRAY, RED};
use plotters::style::colors::BLACK;
use std::path::{Path, PathBuf};

/// One audited image.
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    /// 1 = the most likely label error.
    pub rank: usize,
    /// The image's index in the training file (0 = the first image; in a CSV, line index + 2).
    pub index: usize,
    pub given: usize,
    pub suggested: usize,
    /// Area under the margin: mean of `logit[given] − max other logit` over the epochs.
    pub aum: f32,
    /// How many times training saw it (its epochs).
    pub seen: usize,
}

/// The audit of a run: every trained-on image, the most likely label error first, and the
/// training images (in the file's order) to show them from.
pub struct Audit {
    pub suspects: Vec<Suspect>,
    pub images: Dataset,
    /// Images of the validation split (not trained on, so not audited).
    pub held_out: usize,
}

/// The `(train, val)` indices of `Dataset::split(val_fraction, seed)` on `n` images: the same
/// seeded permutation, so a training-split position can be named by its index in the file.
/// [`audit_run`] checks that the images agree.
pub fn split_indices(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n_val = (val_fraction * n as f64).ceil() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut order);
    let val = order[..n_val.min(n)].to_vec();
    (order[n_val.min(n)..].to_vec(), val)
}

/// Audit the run in `run` from the margins its `last.safetensors` holds, reading its training
/// data from where `data.json` says (or `data`, for data that has moved).
pub fn audit_run(run: &Path, data: Option<&Path>) -> Result<Audit> {
    if !run.is_dir() {
        return Err(Error::config(format!("{}: no such run folder", run.display())));
    }
    let cfg = TrainConfig::from_json_file(&run.join("config.json"))?;
    let last = run.join("last.safetensors");
    if !last.exists() {
        return Err(Error::checkpoint(&last, "not found (has the run finished an epoch?)"));
    }
    let saved = DataSource::read_json(&run.join("data.json"))?;
    let source = data.map_or(saved.clone(), |p| saved.with_path(p));
    let data = source.load(&cfg)?;
    let train = data.train;
    let labels = train
        .labels
        .clone()
        .ok_or_else(|| Error::data(source.path(), None, "has no labels to audit"))?;
    // Class folders come split already (their training images are `train`, in the order of
    // the run's train_files.txt); other data is split here as the run split it.
    let (train_idx, val_idx) = match &data.val {
        Some(val) => ((0..train.len()).collect(), (0..val.len()).collect()),
        None => split_indices(train.len(), cfg.val_fraction, cfg.split_seed),
    };
    let trained = match &data.val {
        Some(_) => train.clone(),
        None => train.split(cfg.val_fraction, cfg.split_seed)?.0,
    };
    if trained != train.subset(&train_idx)? {
        return Err(Error::data(
            source.path(),
            None,
            "cannot tell which images the run trained on (its split does not reproduce)",
        ));
    }
    let (tensors, _) = checkpoint::load(&last)?;
    let k = cfg.model.num_classes;
    let margins = Margins::from_tensors(&last, &tensors, train_idx.len(), k)?.ok_or_else(|| {
        Error::checkpoint(
            &last,
            "holds no training margins (the run was trained by a vitcore from before `audit`): train it again",
        )
    })?;
    let mut suspects: Vec<Suspect> = (0..margins.len())
        .filter(|&i| margins.count[i] > 0.0)
        .map(|i| {
            let given = labels[train_idx[i]] as usize;
            Suspect {
                rank: 0,
                index: train_idx[i],
                given,
                suggested: margins.suggested(i, given),
                aum: margins.aum(i),
                seen: margins.count[i] as usize,
            }
        })
        .collect();
    suspects.sort_by(|a, b| a.aum.total_cmp(&b.aum).then(a.index.cmp(&b.index)));
    for (r, s) in suspects.iter_mut().enumerate() {
        s.rank = r + 1;
    }
    Ok(Audit {
        suspects,
        images: train,
        held_out: val_idx.len(),
    })
}

/// The files `write` makes in `out`.
pub const AUDIT_FILES: [&str; 2] = ["audit.csv", "audit.png"];

impl Audit {
    /// `audit.csv`: `rank,index,given_label,suggested_label,aum,epochs_seen`, every audited
    /// image, the most likely label error first.
    pub fn csv(&self) -> String {
        let mut s = String::from("rank,index,given_label,suggested_label,aum,epochs_seen\n");
        for x in &self.suspects {
            s += &format!(
                "{},{},{},{},{:.4},{}\n",
                x.rank, x.index, x.given, x.suggested, x.aum, x.seen
            );
        }
        s
    }

    /// The contact sheet of the `top` most suspect images, each titled with its rank, index,
    /// given and suggested labels and AUM (framed red when the AUM is negative).
    pub fn sheet(&self, name: &str, top: usize) -> Result<crate::viz::Canvas> {
        let tiles: Vec<Tile> = self
            .suspects
            .iter()
            .take(top)
            .map(|s| Tile {
                pixels: self.images.image(s.index),
                lines: vec![
                    (format!("#{} image {}", s.rank, s.index), BLACK),
                    (format!("given {}, suggested {}", s.given, s.suggested), RED),
                    (format!("AUM {:.2}", s.aum), GRAY),
                ],
                frame: (s.aum < 0.0).then_some(RED),
            })
            .collect();
        tiles::sheet(
            &format!(
                "{name}: the {} training images whose label is most likely wrong",
                tiles.len()
            ),
            "lowest area under the margin first (AUM: mean over training of logit[given] - largest other logit; \
             Pleiss et al. 2020); red frame: negative AUM",
            &tiles,
            self.images.image_shape(),
            3,
            8,
        )
    }

    /// Write `audit.csv` and `audit.png` (the `top` first) into `out`; returns their paths.
    pub fn write(&self, out: &Path, name: &str, top: usize) -> Result<Vec<PathBuf>> {
        let sheet = self.sheet(name, top)?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let [csv, png] = AUDIT_FILES.map(|f| out.join(f));
        fsutil::write_atomic(&csv, self.csv().as_bytes())?;
        sheet.save(&png)?;
        Ok(vec![csv, png])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_indices_name_the_images_of_dataset_split() {
        let n = 37;
        let images: Vec<u8> = (0..n as u8).collect();
        let labels = Some((0..n as u8).map(|i| i % 3).collect());
        let ds = Dataset::new(images, labels, [1, 1, 1], 3).unwrap();
        let (tr, va) = ds.split(0.2, 42).unwrap();
        let (ti, vi) = split_indices(n, 0.2, 42);
        assert_eq!(ds.subset(&ti).unwrap(), tr);
        assert_eq!(ds.subset(&vi).unwrap(), va);
        assert_eq!(split_indices(n, 0.0, 1).1.len(), 0);
    }
}
