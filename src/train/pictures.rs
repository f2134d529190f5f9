//! The pictures of a run, drawn at the end of every `train` and again by `vitcore plot RUN`:
//!
//! - `curves.png` — loss and accuracy per epoch, train against validation, and the learning
//!   rate (from `log.csv`);
//! - `confusion.png` — the test confusion matrix (the validation split's for CSV data) of
//!   `best.safetensors`, as a labelled heat map with counts;
//! - `predictions.png` — test images titled with their predicted and true class, the most
//!   confident mistakes first (framed red), then correctly classified ones.

use super::{load_run, read_log, DataSource, EpochLog, EvalResult};
use crate::backend::Device;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::viz::charts::{self, EpochPoint};
use crate::viz::tiles::{self, Tile};
use crate::viz::{GRAY, RED};
use plotters::style::colors::BLACK;
use std::path::{Path, PathBuf};

/// The pictures a run folder holds.
pub const PICTURES: [&str; 3] = ["curves.png", "confusion.png", "predictions.png"];

/// Tiles in `predictions.png`, and how many of them at most are mistakes.
const PREDICTION_TILES: usize = 40;
const MAX_MISTAKES: usize = 24;

/// Draw the three pictures into `run`: `history` is its log, `result` the final evaluation (with
/// probabilities) of `eval_set`, which is the `on` set ("test" or "validation").
pub fn draw(run: &Path, history: &[EpochLog], result: &EvalResult, eval_set: &Dataset, on: &str) -> Result<()> {
    let name = run
        .file_name()
        .map_or(run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let points: Vec<EpochPoint> = history
        .iter()
        .map(|e| EpochPoint {
            epoch: e.epoch as f64,
            train_loss: e.train_loss,
            train_acc: e.train_acc,
            val_loss: e.val_loss,
            val_acc: e.val_acc,
            lr: e.lr,
        })
        .collect();
    let epochs = history.last().map_or(0, |e| e.epoch);
    charts::curves(&format!("{name}: {epochs} epochs"), &points)?.save(&run.join(PICTURES[0]))?;
    let title = format!(
        "{name}, {on} set: accuracy {:.2}% ({}/{})",
        100.0 * result.accuracy,
        result.correct,
        result.total
    );
    charts::confusion(&title, &result.confusion)?.save(&run.join(PICTURES[1]))?;
    predictions(&name, result, eval_set, on)?.save(&run.join(PICTURES[2]))
}

/// The predictions sheet: up to [`MAX_MISTAKES`] mistakes, most confident first, then correct
/// images in the set's order, [`PREDICTION_TILES`] in all.
fn predictions(name: &str, r: &EvalResult, ds: &Dataset, on: &str) -> Result<crate::viz::Canvas> {
    let labels = ds.labels.as_deref().unwrap_or(&[]);
    let confidence = |i: usize| {
        r.probabilities
            .get(i)
            .map_or(f32::NAN, |p| p[r.predictions[i] as usize])
    };
    let wrong = |i: &usize| labels.get(*i).is_some_and(|&t| t as u32 != r.predictions[*i]);
    let mut mistakes: Vec<usize> = (0..r.predictions.len()).filter(wrong).collect();
    let total_mistakes = mistakes.len();
    mistakes.sort_by(|&a, &b| confidence(b).total_cmp(&confidence(a)).then(a.cmp(&b)));
    mistakes.truncate(MAX_MISTAKES);
    let shown_mistakes = mistakes.len();
    let right = (0..r.predictions.len()).filter(|i| !wrong(i));
    let chosen: Vec<usize> = mistakes.into_iter().chain(right).take(PREDICTION_TILES).collect();
    let tiles: Vec<Tile> = chosen
        .iter()
        .map(|&i| {
            let bad = wrong(&i);
            let ink = if bad { RED } else { BLACK };
            let truth = labels.get(i).map_or("no label".to_string(), |t| format!("true {t}"));
            Tile {
                pixels: ds.image(i),
                lines: vec![
                    (format!("pred {} {:.0}%", r.predictions[i], 100.0 * confidence(i)), ink),
                    (truth, if bad { RED } else { GRAY }),
                ],
                frame: bad.then_some(RED),
            }
        })
        .collect();
    let title = format!(
        "{name}: {on} predictions of best.safetensors ({total_mistakes} mistakes in {})",
        r.predictions.len()
    );
    let subtitle = format!(
        "the {shown_mistakes} most confident mistakes first (red frame), then correct ones; \"pred\" gives the model's probability"
    );
    tiles::sheet(&title, &subtitle, &tiles, ds.image_shape(), 3, 10)
}

/// `vitcore plot RUN`: redraw a run's pictures from its `log.csv` and `best.safetensors`,
/// evaluating the checkpoint again on its test set (the validation split for CSV data; `data`
/// overrides where the data is). Returns the files written. Nothing is written when the run
/// folder, its checkpoint, its log or its data cannot be read.
pub fn redraw(run: &Path, data: Option<&Path>, device: Device) -> Result<Vec<PathBuf>> {
    let (cfg, vit, mut store) = load_run(run, "best")?;
    let history = read_log(&run.join("log.csv"))?;
    let saved = DataSource::read_json(&run.join("data.json"))?;
    let source = match data {
        Some(p) => saved.with_path(p),
        None => saved,
    };
    let loaded = source.load(&cfg)?;
    let (set, on) = match &loaded.test {
        Some(t) => (t.clone(), "test"),
        None => (loaded.train_val(&cfg)?.1, "validation"),
    };
    let expected = [cfg.model.channels, cfg.model.image_height, cfg.model.image_width];
    if set.image_shape() != expected {
        return Err(Error::data(
            source.path(),
            None,
            format!(
                "images are {:?} (C, H, W) but the model expects {expected:?}",
                set.image_shape()
            ),
        ));
    }
    store.to_device(device)?;
    let result = super::tta::evaluate_maybe_tta(&vit, &store, &set, &cfg, true, cfg.tta)?;
    draw(run, &history, &result, &set, on)?;
    Ok(PICTURES.iter().map(|p| run.join(p)).collect())
}
