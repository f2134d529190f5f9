//! `--resume`: continue a run as the user asked, or say why not.
//!
//! A resumed run is the run in its folder: `config.json` (its settings), `data.json` (where its
//! data is) and `last.safetensors` (parameters, optimiser state and [`Position`]). What the
//! command line adds is reconciled with them by [`plan`], before anything is written:
//!
//! - flags that may change a run in progress ([`RULES`] with `true`: `--epochs`, `--lr`,
//!   `--min-lr`, `--early-stopping`; also `--device` and `--quiet`, which are not settings of the
//!   run) apply, each with one line saying what changed; the new values are written to
//!   `config.json` before the first resumed step, so a later plain `--resume` keeps them (an
//!   extension interrupted in its first new epoch still continues to its new end);
//! - every other setting given with a value other than the saved one is refused, naming the flag
//!   and the saved value: it would make the resumed run a different run;
//! - the data is read from the saved place (made absolute when the run started), or from
//!   `--data`/`--train` when given; data at another place is checked against the checksum saved
//!   with the checkpoint, so it must be the same images;
//! - a run with nothing left to do says so ([`Plan::NothingToDo`]) and rewrites nothing.

use super::{DataSource, TrainConfig};
use crate::checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::optim::STATE_PREFIX;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// For each field of `config.json` that a flag sets: the flag, and whether a resumed run may take
/// a new value (`true`) or must keep the saved one (`false`: model shape, data, batch, seed,
/// optimiser and regularisation would make it a different run).
pub const RULES: &[(&str, &str, bool)] = &[
    ("epochs", "--epochs", true),
    ("lr", "--lr", true),
    ("min_lr", "--min-lr", true),
    ("early_stopping", "--early-stopping", true),
    ("batch_size", "--batch-size", false),
    ("eval_batch_size", "--batch-size", false),
    ("seed", "--seed", false),
    ("optimizer", "--optimizer", false),
    ("weight_decay", "--weight-decay", false),
    ("schedule", "--schedule", false),
    ("warmup_epochs", "--warmup-epochs", false),
    ("label_smoothing", "--label-smoothing", false),
    ("clip_norm", "--clip-norm", false),
    ("clip_value", "--clip-value", false),
    ("rotate_deg", "--rotate", false),
    ("shift_px", "--shift", false),
    ("scale", "--scale", false),
    ("shear_deg", "--shear", false),
    ("elastic", "--elastic", false),
    ("ema", "--ema", false),
    ("tta", "--tta", true),
    ("val_fraction", "--val-fraction", false),
    ("train_limit", "--train-limit", false),
    ("test_limit", "--test-limit", false),
    ("model.patch", "--patch", false),
    ("model.embed_dim", "--embed-dim", false),
    ("model.depth", "--depth", false),
    ("model.heads", "--heads", false),
    ("model.mlp_dim", "--mlp-dim", false),
    ("model_options.key_dim", "--key-dim", false),
    ("model_options.global_pool", "--global-pool", false),
    ("model_options.no_class_token", "--class-token", false),
    ("model.dropout", "--dropout", false),
    ("model.attn_dropout", "--attn-dropout", false),
    ("model.gelu", "--gelu", false),
    ("model.init", "--init", false),
    ("init_from", "--init", false),
    ("model.image_height", "--image-size", false),
    ("model.image_width", "--image-size", false),
    ("model.channels", "--channels", false),
    ("test_fraction", "--test-fraction", false),
    ("resize", "--resize", false),
    ("strict", "--strict", false),
    ("crop_scale", "--crop-scale", false),
    ("flip", "--flip", false),
    ("jitter", "--jitter", false),
    ("channel_norm", "--norm", false),
    ("freeze_backbone", "--freeze", false),
    ("layer_decay", "--layer-decay", false),
];

/// Flags that apply on `--resume` without being settings of the run.
pub const RUNTIME_FLAGS: &[&str] = &["--device", "--quiet"];

/// Checkpoint metadata key of the training data's checksum.
pub const DATA_CHECKSUM: &str = "data_checksum";

/// Where a run stands: `epoch` whole epochs done, then `step` steps into the next one, with that
/// partial epoch's running sums (so its `log.csv` row comes out as if it had not stopped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Position {
    /// Whole epochs done.
    pub epoch: usize,
    /// Optimiser steps done since the run began.
    pub global_step: usize,
    /// Steps done inside epoch `epoch + 1` (0 at an epoch's end).
    pub step: usize,
    /// Sum of loss × images over those steps.
    pub loss_sum: f64,
    /// Correct training predictions and images seen in those steps.
    pub correct: usize,
    pub seen: usize,
    /// The learning rate of the last step, and the seconds spent in the partial epoch.
    pub lr: f64,
    pub seconds: f64,
}

impl Position {
    /// Add this position to a checkpoint's metadata (f64 in shortest round-trip form: exact).
    pub fn write_meta(&self, meta: &mut HashMap<String, String>) {
        for (k, v) in [
            ("epoch", self.epoch.to_string()),
            ("global_step", self.global_step.to_string()),
            ("epoch_step", self.step.to_string()),
            ("epoch_loss_sum", self.loss_sum.to_string()),
            ("epoch_correct", self.correct.to_string()),
            ("epoch_seen", self.seen.to_string()),
            ("epoch_lr", self.lr.to_string()),
            ("epoch_seconds", self.seconds.to_string()),
        ] {
            meta.insert(k.to_string(), v);
        }
    }

    /// Read a position from checkpoint metadata (`path` names the checkpoint in errors). A key
    /// that is absent (a checkpoint of an older vitcore) counts as 0.
    pub fn from_meta(meta: &HashMap<String, String>, path: &Path) -> Result<Position> {
        fn get<T: std::str::FromStr + Default>(meta: &HashMap<String, String>, path: &Path, key: &str) -> Result<T> {
            match meta.get(key) {
                None => Ok(T::default()),
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::checkpoint(path, format!("metadata `{key}` = `{v}` is not a number"))),
            }
        }
        Ok(Position {
            epoch: get(meta, path, "epoch")?,
            global_step: get(meta, path, "global_step")?,
            step: get(meta, path, "epoch_step")?,
            loss_sum: get(meta, path, "epoch_loss_sum")?,
            correct: get(meta, path, "epoch_correct")?,
            seen: get(meta, path, "epoch_seen")?,
            lr: get(meta, path, "epoch_lr")?,
            seconds: get(meta, path, "epoch_seconds")?,
        })
    }
}

/// A data set's identity for resume checks: CRC-32 of its pixels and labels, and its size.
pub fn data_checksum(ds: &Dataset) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(&ds.images);
    h.update(ds.labels.as_deref().unwrap_or(&[]));
    format!("crc32 {:08x} of {} images", h.finalize(), ds.len())
}

/// Refuse data whose checksum differs from the one saved with the run's checkpoint (a checkpoint
/// of an older vitcore has none: nothing to check).
pub fn check_data(meta: &HashMap<String, String>, found: &str, source: &DataSource) -> Result<()> {
    match meta.get(DATA_CHECKSUM) {
        Some(saved) if saved != found => Err(Error::data(
            source.path(),
            None,
            format!(
                "these are not the images the run trained on ({found}; the run's: {saved}): \
                 a resumed run must train on the same data ({} names its new place only)",
                source.flag()
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether early stopping ended the run at the position saved in `meta`, with patience
/// `cfg.early_stopping` (a new `--early-stopping` may let it go on); the epochs without
/// improvement when it did.
pub fn stopped_early(meta: &HashMap<String, String>, cfg: &TrainConfig) -> Option<usize> {
    let patience = cfg.early_stopping?;
    let bad: usize = meta.get(&format!("{STATE_PREFIX}early.bad_epochs"))?.parse().ok()?;
    // As in EarlyStopping::should_stop: only an epoch without improvement stops.
    (bad > 0 && bad >= patience).then_some(bad)
}

/// What the command line asks of a resumed run.
#[derive(Clone, Debug)]
pub struct ResumeRequest {
    /// The run folder (`--resume`).
    pub run: PathBuf,
    /// `mnist` or `csv`: the data command given.
    pub kind: &'static str,
    /// `--data` / `--train`, when given.
    pub data: Option<PathBuf>,
    /// `--preset`, when given.
    pub preset: Option<String>,
    /// `--out`, when given.
    pub out: Option<PathBuf>,
}

/// What [`plan`] decided.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Nothing to train or evaluate; the message says why and what would do more.
    NothingToDo(String),
    /// Go on.
    Continue(Box<Continuation>),
}

/// How a resumed run goes on.
#[derive(Clone, Debug)]
pub struct Continuation {
    /// The run's configuration with the changes the command line may make.
    pub cfg: TrainConfig,
    /// Its data (absolute).
    pub source: DataSource,
    /// Lines to print when it starts: what changed from the saved run.
    pub notes: Vec<String>,
    /// The device the run last used.
    pub saved_device: Option<String>,
}

/// Reconcile a resume request with the run in its folder (see the module documentation).
/// `apply_flags` applies the command line's training flags to a configuration. Reads only.
pub fn plan(req: &ResumeRequest, apply_flags: impl Fn(TrainConfig) -> TrainConfig) -> Result<Plan> {
    let run = &req.run;
    if !run.is_dir() {
        return Err(Error::config(format!("{}: no such run folder", run.display())));
    }
    let saved = TrainConfig::from_json_file(&run.join("config.json"))?;
    let saved_source = DataSource::read_json(&run.join("data.json"))?;
    let last = run.join("last.safetensors");
    if !last.exists() {
        return Err(Error::checkpoint(
            &last,
            "not found: the run has not saved a step yet, so there is nothing to resume (start it again with --out)",
        ));
    }
    let meta = checkpoint::read_metadata(&last)?;
    if saved_source.kind() != req.kind {
        return Err(Error::config(format!(
            "{} trained on {} data ({}): resume it with `vitcore train {} --resume {}`",
            run.display(),
            saved_source.kind(),
            saved_source.path().display(),
            saved_source.kind(),
            run.display()
        )));
    }
    if let Some(out) = &req.out {
        if !(fsutil::same_file(out, run) || out == run) {
            return Err(Error::config(format!(
                "--out {}: a resumed run stays in its own folder, {}; leave --out out",
                out.display(),
                run.display()
            )));
        }
    }
    let mut refused = Vec::new();
    if let Some(p) = req.preset.as_deref().filter(|p| *p != saved.preset) {
        refused.push(format!("--preset {p}: the run has preset {}", saved.preset));
    }
    let cfg = apply_flags(saved.clone());
    let (mut notes, more_refused) = reconcile(&saved, &cfg);
    refused.extend(more_refused);
    if !refused.is_empty() {
        let may: Vec<&str> = RULES
            .iter()
            .filter(|r| r.2)
            .map(|r| r.1)
            .chain(RUNTIME_FLAGS.iter().copied())
            .collect();
        return Err(Error::config(format!(
            "cannot resume {} with these flags: they would make it a different run\n  {}\n\
             On --resume only {} may change (and {}, for data that has moved); start a new run \
             (--out) to change the others.",
            run.display(),
            refused.join("\n  "),
            may.join(", "),
            saved_source.flag()
        )));
    }
    let pos = Position::from_meta(&meta, &last)?;
    let early = if pos.step == 0 {
        stopped_early(&meta, &cfg)
    } else {
        None
    };
    if (pos.epoch >= cfg.epochs || early.is_some()) && results_are_current(run, pos.epoch) {
        let why = match early {
            Some(bad) => format!(
                "stopped early after epoch {} (no better validation loss for {bad} epochs, --early-stopping {}); \
                 pass a larger --early-stopping to train on",
                pos.epoch,
                cfg.early_stopping.unwrap_or(0)
            ),
            None => format!(
                "has trained {} epoch(s), and {} were asked for; pass --epochs N (above {}) to train it further",
                pos.epoch, cfg.epochs, pos.epoch
            ),
        };
        return Ok(Plan::NothingToDo(format!(
            "{} {why}. Nothing to do: its results in {} are left as they are.",
            run.display(),
            run.join("test_metrics.json").display()
        )));
    }
    let (source, moved) = resolve_data(run, &saved_source, req.data.as_deref(), &meta)?;
    notes.extend(moved);
    Ok(Plan::Continue(Box::new(Continuation {
        cfg,
        source,
        notes,
        saved_device: meta.get("device").cloned(),
    })))
}

/// The settings that differ between the saved and the requested configuration: lines saying what
/// changed (allowed), and refusals naming the flag and the saved value.
pub fn reconcile(saved: &TrainConfig, requested: &TrainConfig) -> (Vec<String>, Vec<String>) {
    let (old_fields, mut new) = (flatten(saved), flatten(requested));
    // A field at its default is left out of config.json, so a flag setting one back to its
    // default (`--class-token true`, `--tta false`) shows as a field that disappeared.
    let gone: Vec<(String, Value)> = old_fields
        .iter()
        .filter(|(k, _)| !new.iter().any(|(n, _)| n == k))
        .map(|(k, _)| (k.clone(), Value::Null))
        .collect();
    new.extend(gone);
    let old: HashMap<String, Value> = old_fields.into_iter().collect();
    let (mut notes, mut refused) = (Vec::new(), Vec::new());
    let mut flags_seen = Vec::new();
    for (field, new_value) in &new {
        let old_value = old.get(field).unwrap_or(&Value::Null);
        if old_value == new_value {
            continue;
        }
        let (flag, may) = RULES
            .iter()
            .find(|r| r.0 == field)
            .map_or((field.as_str(), false), |r| (r.1, r.2));
        if flags_seen.contains(&flag) {
            continue; // --batch-size sets two fields
        }
        flags_seen.push(flag);
        let (was, now) = (show_as(field, old_value), show_as(field, new_value));
        match may {
            true => notes.push(format!(
                "resume: {flag} {now} replaces the run's {was} (saved in config.json)"
            )),
            false => {
                // no_class_token is shown as what --class-token sets (see show_as).
                let name = field.replace("no_class_token", "class_token");
                refused.push(format!("{flag} {now}: the run has {name} = {was}"))
            }
        }
    }
    (notes, refused)
}

/// `config.json` as `field → value`, nested objects as `outer.inner`, in a fixed order.
fn flatten(cfg: &TrainConfig) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Value::Object(map) = serde_json::to_value(cfg).expect("config serialises") {
        for (k, v) in map {
            match v {
                Value::Object(inner) => out.extend(inner.into_iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv))),
                v => out.push((k, v)),
            }
        }
    }
    out
}

/// A field's value as its flag takes it: `--class-token` is the negation of
/// `no_class_token`, and a field left out of config.json is at its default.
fn show_as(field: &str, v: &Value) -> String {
    match (field, v) {
        ("model_options.no_class_token", Value::Bool(b)) => (!b).to_string(),
        ("model_options.no_class_token", Value::Null) => "true".into(),
        ("model_options.global_pool", Value::Null) => "token".into(),
        _ => show(v),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `test_metrics.json` holds the evaluation made after epoch `epoch` (one written by an
/// older vitcore does not say: it counts as current).
fn results_are_current(run: &Path, epoch: usize) -> bool {
    let Ok(text) = std::fs::read_to_string(run.join("test_metrics.json")) else {
        return false;
    };
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    match json.get("trained_epochs").and_then(Value::as_u64) {
        Some(n) => n as usize == epoch,
        None => true,
    }
}

/// Where to read a resumed run's data: the saved place, or the one given. Returns the source
/// (absolute) and a line to print when the place changed.
fn resolve_data(
    run: &Path,
    saved: &DataSource,
    given: Option<&Path>,
    meta: &HashMap<String, String>,
) -> Result<(DataSource, Option<String>)> {
    // A path saved by an older vitcore may be relative: to the directory it was started in, which
    // is not known; the current one is the best guess.
    let saved = saved.absolute()?;
    let flag = saved.flag();
    let Some(given) = given else {
        if saved.path().exists() {
            return Ok((saved, None));
        }
        return Err(Error::config(format!(
            "the data of {} is not at {} (saved in {}): if it has moved, give its new place with {flag} PATH",
            run.display(),
            saved.path().display(),
            run.join("data.json").display()
        )));
    };
    let given = saved.with_path(given).absolute()?;
    if given.path() == saved.path() || fsutil::same_file(given.path(), saved.path()) {
        return Ok((saved, None));
    }
    let saved_exists = saved.path().exists();
    if saved_exists && !meta.contains_key(DATA_CHECKSUM) {
        return Err(Error::config(format!(
            "{flag} {}: the run trained on {}, which is still there, and its checkpoint (from an older vitcore) \
             has no checksum to check that {} holds the same images; resume without {flag}",
            given.path().display(),
            saved.path().display(),
            given.path().display()
        )));
    }
    let note = format!(
        "resume: {flag} {}: reading the data there (the run had {}{}); it must be the same images{}",
        given.path().display(),
        saved.path().display(),
        if saved_exists { "" } else { ", which is gone" },
        if meta.contains_key(DATA_CHECKSUM) {
            ", as checked by their checksum"
        } else {
            ""
        },
    );
    Ok((given, Some(note)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_checkpoint_metadata_exactly() {
        let pos = Position {
            epoch: 3,
            global_step: 1234,
            step: 17,
            loss_sum: 0.1 + 0.2 + 1e-17 * 3.0,
            correct: 901,
            seen: 1088,
            lr: 1.0 / 3.0,
            seconds: 12.345678901234567,
        };
        let mut meta = HashMap::new();
        pos.write_meta(&mut meta);
        let back = Position::from_meta(&meta, Path::new("last.safetensors")).unwrap();
        assert_eq!(back, pos);
        assert_eq!(back.loss_sum.to_bits(), pos.loss_sum.to_bits());
        // An older checkpoint has only the epoch and step: the rest counts as 0.
        let old = HashMap::from([("epoch".to_string(), "2".to_string())]);
        let p = Position::from_meta(&old, Path::new("x")).unwrap();
        assert_eq!((p.epoch, p.step, p.seen), (2, 0, 0));
        let bad = HashMap::from([("epoch_step".to_string(), "two".to_string())]);
        let e = Position::from_meta(&bad, Path::new("last.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("last.safetensors") && e.contains("epoch_step"), "{e}");
    }

    #[test]
    fn reconcile_applies_allowed_changes_and_refuses_the_others_once_per_flag() {
        let saved = TrainConfig::default_preset();
        let mut asked = saved.clone();
        asked.lr = 2e-3;
        asked.epochs = 20;
        let (notes, refused) = reconcile(&saved, &asked);
        assert_eq!(
            notes,
            [
                "resume: --epochs 20 replaces the run's 15 (saved in config.json)",
                "resume: --lr 0.002 replaces the run's 0.001 (saved in config.json)"
            ]
        );
        assert!(refused.is_empty());
        asked.batch_size = 1024; // also raises eval_batch_size: still one refusal
        asked.eval_batch_size = 1024;
        asked.model.depth = 2;
        let (_, refused) = reconcile(&saved, &asked);
        assert_eq!(
            refused,
            [
                "--batch-size 1024: the run has batch_size = 64",
                "--depth 2: the run has model.depth = 6"
            ]
        );
        assert_eq!(reconcile(&saved, &saved), (vec![], vec![]));
    }

    #[test]
    fn reconcile_sees_options_set_back_to_their_default_and_names_them_as_their_flags() {
        // The default recipe pools without a class token; asking for timm's class-token model
        // sets both options to their defaults, which config.json leaves out.
        let saved = TrainConfig::default_preset();
        let mut asked = saved.clone();
        asked.model_options = crate::nn::VitOptions::default();
        let (notes, refused) = reconcile(&saved, &asked);
        assert!(notes.is_empty());
        let mut refused = refused;
        refused.sort();
        assert_eq!(
            refused,
            [
                "--class-token true: the run has model_options.class_token = false",
                "--global-pool token: the run has model_options.global_pool = avg",
            ]
        );
        // And the other way round.
        let (_, refused) = reconcile(&asked, &saved);
        assert!(
            refused.contains(&"--class-token false: the run has model_options.class_token = true".to_string()),
            "{refused:?}"
        );
        // Any field: test-time augmentation switched off on a run that had it.
        let mut off = saved.clone();
        off.tta = false;
        let (notes, refused) = reconcile(&saved, &off);
        assert_eq!(notes.len() + refused.len(), 1, "{notes:?} {refused:?}");
    }

    #[test]
    fn stopped_early_follows_the_patience_asked_for() {
        let meta = HashMap::from([(format!("{STATE_PREFIX}early.bad_epochs"), "3".to_string())]);
        let mut cfg = TrainConfig::default_preset();
        assert_eq!(stopped_early(&meta, &cfg), None, "no early stopping");
        cfg.early_stopping = Some(3);
        assert_eq!(stopped_early(&meta, &cfg), Some(3));
        cfg.early_stopping = Some(5); // a larger patience lets it go on
        assert_eq!(stopped_early(&meta, &cfg), None);
        let improved = HashMap::from([(format!("{STATE_PREFIX}early.bad_epochs"), "0".to_string())]);
        cfg.early_stopping = Some(0);
        assert_eq!(stopped_early(&improved, &cfg), None);
    }
}
