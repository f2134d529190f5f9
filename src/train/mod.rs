//! The training loop, evaluation and prediction: what `vitcore train`, `eval` and `predict` run.
//!
//! A run lives in a folder (`runs/<name>/`):
//! - `config.json` — the full [`TrainConfig`] (rebuilds the model for resume, eval and predict);
//! - `data.json` — where the data is (an absolute path, so a resume works from any directory);
//! - `log.csv` — one row per epoch: `epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds`;
//! - `last.safetensors` — parameters + optimiser state + [`Position`] (the epoch, and the step
//!   inside the next one when interrupted there) + the data's checksum + every training image's
//!   margins so far ([`margins`], for `vitcore audit`) + the weights' moving average with
//!   `--ema` ([`crate::optim::ema`]), written after every epoch and when a signal stops the run
//!   ([`interrupt`]);
//! - `best.safetensors` — the parameters (with `--ema`, their moving average) with the lowest
//!   validation loss so far;
//! - `test_metrics.json` — the final test accuracy and confusion matrix (by test-time
//!   augmentation when the run's config asks for it: [`tta`]);
//! - `curves.png`, `confusion.png`, `predictions.png` — the run in pictures ([`pictures`]).
//!
//! Every file is written atomically (temporary file, then rename: [`crate::fsutil`]), so an
//! interrupted run never leaves a half-written one, and none of them may be one of the run's
//! input files. `--resume` continues from `last.safetensors` ([`resume`]).

pub mod config;
pub mod interrupt;
pub mod margins;
pub mod pictures;
pub mod resume;
pub mod tta;

pub use config::{OptimizerKind, ScheduleKind, StepBudget, TrainConfig};
pub use interrupt::Interrupt;
pub use margins::Margins;
pub use resume::{Plan, Position, ResumeRequest};

use crate::autograd::{Graph, ParamStore};
use crate::backend::Device;
use crate::checkpoint;
use crate::data::{self, BatchLoader, Dataset, LoaderConfig};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::nn::{Mode, Vit};
use crate::optim::{clip, Adam, AdamConfig, EarlyStopping, Ema, LrScheduler, Schedule};
use crate::rng::derive_seed;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where the training images come from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// MNIST IDX files (train + t10k), gzip or raw.
    Mnist { dir: PathBuf },
    /// A Kaggle digit-recognizer `train.csv` (there is no labelled test set: the validation split
    /// is reported in its place).
    Csv { train: PathBuf },
    /// Photos in one folder per class ([`data::folder`]), split into train / validation / test
    /// (stratified, seeded), or with separate validation and test folders.
    Folder {
        dir: PathBuf,
        #[serde(default)]
        val: Option<PathBuf>,
        #[serde(default)]
        test: Option<PathBuf>,
    },
}

/// Loaded data: train (before the validation split, unless `val` is given) and an optional
/// labelled test set.
pub struct Data {
    pub train: Dataset,
    /// The validation set when the source has its own (class folders); else it is split off
    /// `train` by `val_fraction`.
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    /// Class folders: names and file lists.
    pub folder: Option<FolderInfo>,
}

/// What a class-folder run keeps in its folder besides the images: the class names, the files
/// of each part of the split, and the files that were skipped.
#[derive(Clone, Debug, Default)]
pub struct FolderInfo {
    pub classes: Vec<String>,
    /// `(root, file names relative to it)` of the train, validation and test parts.
    pub parts: [(PathBuf, Vec<String>); 3],
    pub skipped: Vec<(PathBuf, String)>,
}

/// The class names of a run (`classes.json`), written by `train folder`.
pub const CLASSES_FILE: &str = "classes.json";
/// The split's file lists in a class-folder run folder.
pub const SPLIT_FILES: [&str; 3] = ["train_files.txt", "val_files.txt", "test_files.txt"];
/// The images a class-folder run skipped, one `file<TAB>why` per line.
pub const SKIPPED_FILE: &str = "skipped.txt";

impl Data {
    /// The training and validation sets: `val` when the source has one, else a seeded split of
    /// `train` (`Dataset::split`).
    pub fn train_val(&self, cfg: &TrainConfig) -> Result<(Dataset, Dataset)> {
        match &self.val {
            Some(v) => Ok((self.train.clone(), v.clone())),
            None => self.train.split(cfg.val_fraction, cfg.split_seed),
        }
    }
}

impl FolderInfo {
    /// Write `classes.json`, the file lists and `skipped.txt` into the run folder.
    pub fn write(&self, out: &Path) -> Result<()> {
        let classes = serde_json::to_string_pretty(&self.classes).expect("serialises");
        fsutil::write_atomic(&out.join(CLASSES_FILE), classes.as_bytes())?;
        for (name, (root, files)) in SPLIT_FILES.iter().zip(&self.parts) {
            let mut text = format!("# root: {}\n", root.display());
            for f in files {
                text += f;
                text.push('\n');
            }
            fsutil::write_atomic(&out.join(name), text.as_bytes())?;
        }
        let mut text = String::from("# images skipped: file<TAB>why\n");
        for (f, why) in &self.skipped {
            text += &format!("{}\t{why}\n", f.display());
        }
        fsutil::write_atomic(&out.join(SKIPPED_FILE), text.as_bytes())
    }
}

/// The class names a run saved (`classes.json`), or `None` for a digit run.
pub fn read_classes(run: &Path) -> Result<Option<Vec<String>>> {
    let path = run.join(CLASSES_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::data(
            &path,
            Some(e.line()),
            format!("expected a JSON list of class names: {e}"),
        )
    })
}

impl DataSource {
    /// The folder or file the data comes from (for error messages).
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Mnist { dir } | DataSource::Folder { dir, .. } => dir,
            DataSource::Csv { train } => train,
        }
    }

    /// The data command: `mnist`, `csv` or `folder`.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSource::Mnist { .. } => "mnist",
            DataSource::Csv { .. } => "csv",
            DataSource::Folder { .. } => "folder",
        }
    }

    /// The flag that names the data's place: `--data`, `--train` or `--data` (a folder run's
    /// training folder, given as `DIR` when the run starts).
    pub fn flag(&self) -> &'static str {
        match self {
            DataSource::Mnist { .. } | DataSource::Folder { .. } => "--data",
            DataSource::Csv { .. } => "--train",
        }
    }

    /// The same kind of data at another place.
    pub fn with_path(&self, path: &Path) -> DataSource {
        match self {
            DataSource::Mnist { .. } => DataSource::Mnist {
                dir: path.to_path_buf(),
            },
            DataSource::Csv { .. } => DataSource::Csv {
                train: path.to_path_buf(),
            },
            DataSource::Folder { val, test, .. } => DataSource::Folder {
                dir: path.to_path_buf(),
                val: val.clone(),
                test: test.clone(),
            },
        }
    }

    /// The same place as an absolute path (against the current directory), so that a run folder
    /// names its data wherever it is resumed from.
    pub fn absolute(&self) -> Result<DataSource> {
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
        Ok(match self {
            DataSource::Folder { dir, val, test } => DataSource::Folder {
                dir: abs(dir)?,
                val: val.as_deref().map(abs).transpose()?,
                test: test.as_deref().map(abs).transpose()?,
            },
            other => other.with_path(&abs(other.path())?),
        })
    }

    /// The files this source reads (for refusing to write over them). For class folders, the
    /// folders themselves: a run folder inside one would add its pictures to a class.
    pub fn input_files(&self) -> Result<Vec<PathBuf>> {
        match self {
            DataSource::Mnist { dir } => data::mnist_paths(dir),
            DataSource::Csv { train } => Ok(vec![train.clone()]),
            DataSource::Folder { dir, val, test } => Ok([Some(dir), val.as_ref(), test.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect()),
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialises")
    }

    /// Read a run's `data.json`.
    pub fn read_json(path: &Path) -> Result<DataSource> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::data(path, Some(e.line()), format!("not a vitcore data.json: {e}")))
    }

    pub fn load(&self, cfg: &TrainConfig) -> Result<Data> {
        let limit = |d: Dataset, n: Option<usize>| -> Result<Dataset> {
            match n {
                Some(n) if n < d.len() => d.subset(&(0..n).collect::<Vec<_>>()),
                _ => Ok(d),
            }
        };
        let (train, test) = match self {
            DataSource::Folder { dir, val, test } => return load_folder(cfg, dir, val.as_deref(), test.as_deref()),
            DataSource::Mnist { dir } => {
                let (train, test) = data::load_mnist(dir)?;
                (train, Some(test))
            }
            DataSource::Csv { train } => {
                let d = data::csv::load_kaggle_csv(train)?;
                if d.labels.is_none() {
                    return Err(Error::data(
                        train,
                        Some(1),
                        "this CSV has no `label` column: it is a test file, not training data",
                    ));
                }
                (d, None)
            }
        };
        let test = match test {
            Some(t) => Some(limit(t, cfg.test_limit)?),
            None => None,
        };
        Ok(Data {
            train: limit(train, cfg.train_limit)?,
            val: None,
            test,
            folder: None,
        })
    }
}

/// Load class folders as `cfg` says (size, channels, resize, split): see [`data::folder`].
fn load_folder(cfg: &TrainConfig, dir: &Path, val_dir: Option<&Path>, test_dir: Option<&Path>) -> Result<Data> {
    use data::folder::{self, split, PhotoShape};
    let m = &cfg.model;
    if m.image_height != m.image_width {
        return Err(Error::config(format!(
            "class folders are read at a square size, but the model is {}x{}",
            m.image_height, m.image_width
        )));
    }
    let shape = PhotoShape {
        size: m.image_height,
        channels: m.channels,
        resize: cfg.resize,
    };
    let main = folder::scan(dir, None)?;
    let classes = main.classes.clone();
    let loaded = folder::load(&main, shape, cfg.strict)?;
    let labels = loaded.dataset.labels.clone().unwrap_or_default();
    let fractions = (
        if val_dir.is_some() { 0.0 } else { cfg.val_fraction },
        if test_dir.is_some() { 0.0 } else { cfg.test_fraction },
    );
    let parts = split::stratified(&labels, classes.len(), fractions.0, fractions.1, cfg.split_seed)?;
    let mut train_idx = parts.train;
    if let Some(n) = cfg.train_limit {
        train_idx.truncate(n);
    }
    let names = |root: &Path, files: &[PathBuf], idx: &[usize]| -> Vec<String> {
        idx.iter().map(|&i| folder::relative_name(root, &files[i])).collect()
    };
    let mut skipped = loaded.skipped.clone();
    let mut info = FolderInfo {
        classes: classes.clone(),
        parts: Default::default(),
        skipped: Vec::new(),
    };
    info.parts[0] = (dir.to_path_buf(), names(dir, &loaded.files, &train_idx));
    let mut other = |i: usize, given: Option<&Path>, idx: &[usize]| -> Result<Option<Dataset>> {
        let (ds, root, files) = match given {
            Some(d) => {
                let f = folder::load(&folder::scan(d, Some(&classes))?, shape, cfg.strict)?;
                skipped.extend(f.skipped.iter().cloned());
                let all: Vec<usize> = (0..f.dataset.len()).collect();
                let files = names(d, &f.files, &all);
                (f.dataset, d.to_path_buf(), files)
            }
            None => (
                loaded.dataset.subset(idx)?,
                dir.to_path_buf(),
                names(dir, &loaded.files, idx),
            ),
        };
        info.parts[i] = (root, files);
        Ok((!ds.is_empty()).then_some(ds))
    };
    let val = other(1, val_dir, &parts.val)?;
    let mut test = other(2, test_dir, &parts.test)?;
    if let (Some(t), Some(n)) = (&test, cfg.test_limit) {
        if n < t.len() {
            test = Some(t.subset(&(0..n).collect::<Vec<_>>())?);
        }
    }
    info.skipped = skipped;
    Ok(Data {
        train: loaded.dataset.subset(&train_idx)?,
        // An empty validation part (too few images, or --val-fraction 0) is no validation set.
        val: Some(val.unwrap_or_else(|| loaded.dataset.subset(&[]).expect("an empty subset"))),
        test,
        folder: Some(info),
    })
}

/// Loss, accuracy, confusion matrix (rows: true class, columns: predicted) and the predictions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    pub confusion: Vec<Vec<usize>>,
    #[serde(skip)]
    pub predictions: Vec<u32>,
    #[serde(skip)]
    pub probabilities: Vec<Vec<f32>>,
}

impl EvalResult {
    /// The confusion matrix as an aligned text table.
    pub fn confusion_table(&self) -> String {
        let k = self.confusion.len();
        let mut s = String::from("true\\pred");
        for c in 0..k {
            s += &format!("{c:>6}");
        }
        s += "\n";
        for (t, row) in self.confusion.iter().enumerate() {
            s += &format!("{t:>9}");
            for v in row {
                s += &format!("{v:>6}");
            }
            s += "\n";
        }
        s
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Run the model over a dataset (no gradients, dropout off), on the parameters' device.
pub fn evaluate(
    vit: &Vit,
    store: &ParamStore,
    ds: &Dataset,
    cfg: &TrainConfig,
    keep_probs: bool,
) -> Result<EvalResult> {
    let k = vit.cfg.num_classes;
    let loader = BatchLoader::new(
        Arc::new(ds.clone()),
        LoaderConfig {
            mean: cfg.mean,
            std: cfg.std,
            channel_norm: cfg.channel_norm.clone(),
            ..LoaderConfig::eval(cfg.eval_batch_size)
        },
    )?;
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut loss_sum, mut correct, mut labelled) = (0.0f64, 0usize, 0usize);
    let mut predictions = Vec::with_capacity(ds.len());
    let mut probs = Vec::new();
    for batch in loader {
        let n = batch.len();
        let mut g = Graph::no_grad();
        let x = Tensor::from_vec(batch.images, &batch.shape)?.to_device(store.device())?;
        let logits = vit.forward(&mut g, store, x, Mode::Eval)?;
        if !batch.labels.is_empty() {
            let loss = g.cross_entropy(logits, &batch.labels, 0.0)?;
            loss_sum += g.value(loss).item()? as f64 * n as f64;
        }
        // The model's output (probabilities when its head ends in a softmax), read once.
        let output = vit.output(&mut g, logits)?;
        let output = match keep_probs {
            true => g.value(output).values()?,
            false => Vec::new(),
        };
        for (i, row) in g.value(logits).values()?.chunks(k).enumerate() {
            if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
                return Err(Error::config(format!(
                    "the model's output for image {} is {bad}, not a finite number: its parameters or \
                     this input are broken, so there is no prediction to give",
                    batch.indices[i] + 1
                )));
            }
            let p = argmax(row);
            predictions.push(p as u32);
            if keep_probs {
                probs.push(vit.probabilities(&output[i * k..(i + 1) * k]));
            }
            if let Some(&t) = batch.labels.get(i) {
                confusion[t as usize][p] += 1;
                correct += (t as usize == p) as usize;
                labelled += 1;
            }
        }
    }
    Ok(EvalResult {
        loss: loss_sum / labelled.max(1) as f64,
        accuracy: correct as f64 / labelled.max(1) as f64,
        correct,
        total: labelled,
        confusion,
        predictions,
        probabilities: probs,
    })
}

/// One training step's forward and backward: the gradients of the mean cross-entropy of
/// `images` against `labels` go into `store`, replacing the last step's (dropped first, so they
/// are not kept alive through this step). Returns the loss and the logits, on the store's device
/// (`images` must be there too); the activations are freed on return, before any optimiser runs.
pub fn forward_backward(
    vit: &Vit,
    store: &mut ParamStore,
    images: Tensor,
    labels: &[u32],
    smoothing: f32,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    store.zero_grad();
    let mut g = Graph::new();
    let logits = vit.forward(&mut g, store, images, Mode::Train { seed })?;
    let loss = g.cross_entropy(logits, labels, smoothing)?;
    let grads = g.backward(loss)?;
    store.accumulate_grads(&grads)?;
    Ok((g.value(loss).clone(), g.value(logits).clone()))
}

/// Per-epoch numbers, as in `log.csv`.
#[derive(Clone, Debug)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// What a finished `train` reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub epochs: Vec<EpochLog>,
    /// Test-set (or, for CSV data, validation-set) evaluation of the best checkpoint.
    pub final_eval: EvalResult,
    pub final_eval_on: &'static str,
    pub seconds: f64,
}

const LOG_HEADER: &str = "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds";

/// The files of a run folder.
pub const RUN_FILES: [&str; 9] = [
    "config.json",
    "data.json",
    "log.csv",
    "last.safetensors",
    "best.safetensors",
    "test_metrics.json",
    pictures::PICTURES[0],
    pictures::PICTURES[1],
    pictures::PICTURES[2],
];

/// Options that do not change the model or its training.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue the run found in `out` instead of starting a new one (`cfg` is then its saved
    /// configuration with the changes [`resume::plan`] allowed).
    pub resume: bool,
    /// No progress bars (tests, logs).
    pub quiet: bool,
    /// Where the model trains (the parameters, optimiser state and every step live there).
    pub device: Device,
    /// Lines to print when a resumed run starts (what changed from the saved run).
    pub notes: Vec<String>,
    /// Ctrl-C / SIGTERM: checked after every step (the default never fires).
    pub interrupt: Interrupt,
}

fn build_optimizer(cfg: &TrainConfig) -> Result<Adam> {
    let ac = AdamConfig {
        lr: cfg.lr,
        betas: cfg.betas,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    };
    let adam = match cfg.optimizer {
        OptimizerKind::Adam => Adam::adam(ac)?,
        OptimizerKind::AdamW => Adam::adamw(ac)?.with_no_decay(crate::optim::adam::default_no_decay),
    }
    .with_eps_hat(cfg.eps_hat);
    Ok(match cfg.layer_decay {
        Some(decay) => {
            let depth = cfg.model.depth;
            adam.with_lr_scale(move |name| layer_decay_scale(name, depth, decay))
        }
        None => adam,
    })
}

/// Layer-wise learning-rate decay (BEiT, Bao et al. 2021; timm's `param_groups_layer_decay`):
/// the factor of parameter `name` in a ViT of `depth` blocks is `decay^(depth + 1 − layer)`
/// with layer 0 the embeddings (`patch_embed`, `cls_token`, `pos_embed`), `i + 1` for
/// `blocks.i`, and `depth + 1` for the final norm and the head (factor 1): the layers nearest
/// the input, whose pretrained features are the most general, move the least.
pub fn layer_decay_scale(name: &str, depth: usize, decay: f64) -> f64 {
    let layer = if name.starts_with("patch_embed") || name == "cls_token" || name == "pos_embed" {
        0
    } else if let Some(rest) = name.strip_prefix("blocks.") {
        rest.split('.')
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .map_or(depth + 1, |i| i + 1)
    } else {
        depth + 1
    };
    decay.powi((depth + 1 - layer) as i32)
}

/// Whether a parameter trains when the backbone is frozen (`--freeze backbone`): the head only.
pub fn trains_when_frozen(name: &str) -> bool {
    name.starts_with("head.")
}

fn build_schedule(cfg: &TrainConfig, steps_per_epoch: usize) -> Result<LrScheduler> {
    let total = cfg.epochs * steps_per_epoch;
    let schedule = match cfg.schedule {
        ScheduleKind::Constant => Schedule::Constant,
        ScheduleKind::WarmupCosine => Schedule::WarmupCosine {
            warmup_steps: ((cfg.warmup_epochs * steps_per_epoch as f64) as usize).min(total.saturating_sub(1)),
            total_steps: total,
            min_lr: cfg.min_lr,
        },
        ScheduleKind::Plateau => Schedule::reduce_on_plateau(cfg.plateau_factor, cfg.plateau_patience, cfg.min_lr),
        ScheduleKind::PlateauKeras => {
            Schedule::reduce_on_plateau_keras(cfg.plateau_factor, cfg.plateau_patience, cfg.min_lr)
        }
    };
    LrScheduler::new(cfg.lr, schedule)
}

/// Build the model described by `cfg` with freshly initialised parameters.
pub fn build_model(cfg: &TrainConfig) -> Result<(Vit, ParamStore)> {
    let mut store = ParamStore::new();
    let vit = Vit::with_options(
        cfg.model.clone(),
        cfg.model_options.clone(),
        &mut store,
        derive_seed(cfg.seed, 1),
    )?;
    Ok((vit, store))
}

/// Load a finished or interrupted run: its config and the parameters of `which` checkpoint
/// (`best` or `last`).
pub fn load_run(run: &Path, which: &str) -> Result<(TrainConfig, Vit, ParamStore)> {
    if !run.is_dir() {
        return Err(Error::config(format!("{}: no such run folder", run.display())));
    }
    let cfg = TrainConfig::from_json_file(&run.join("config.json"))?;
    let (vit, mut store) = build_model(&cfg)?;
    let path = run.join(format!("{which}.safetensors"));
    if !path.exists() {
        return Err(Error::checkpoint(&path, "not found (has the run finished an epoch?)"));
    }
    checkpoint::load_into(&path, &mut store)?;
    Ok((cfg, vit, store))
}

fn progress_bar(quiet: bool, len: usize, prefix: String) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// The training state besides the parameters: what `last.safetensors` holds for a resume.
struct OptimState {
    adam: Adam,
    sched: LrScheduler,
    early: Option<EarlyStopping>,
    /// The lowest validation loss so far (that of `best.safetensors`).
    best_val: f64,
    /// Data checksum and device, saved for the resume checks.
    run_meta: HashMap<String, String>,
    /// Every training image's margins so far (the label audit's evidence).
    margins: Margins,
    /// The weights' moving average (`--ema`).
    ema: Option<Ema>,
}

impl OptimState {
    /// Write `last.safetensors` (`path`): parameters, this state and the run's position.
    fn save_last(&self, path: &Path, store: &ParamStore, pos: &Position) -> Result<()> {
        let mut meta = self.adam.state_metadata(store);
        meta.extend(self.sched.state_metadata());
        if let Some(e) = &self.early {
            meta.extend(e.state_metadata());
        }
        pos.write_meta(&mut meta);
        meta.insert("best_val_loss".into(), self.best_val.to_string());
        meta.extend(self.run_meta.clone());
        let mut extra = self.adam.state_tensors(store);
        extra.extend(self.margins.tensors()?);
        if let Some(ema) = &self.ema {
            let (tensors, m) = ema.state(store);
            extra.extend(tensors);
            meta.extend(m);
        }
        checkpoint::save_params(path, store, &extra, &meta)
    }
}

/// The error that ends an interrupted run: where it stopped and how to go on.
fn interrupted(signal: i32, pos: &Position, steps_per_epoch: usize, out: &Path, kind: &str) -> Error {
    let at = match pos.step {
        0 => format!("after epoch {}", pos.epoch),
        s => format!("at epoch {}, step {s} of {steps_per_epoch}", pos.epoch + 1),
    };
    Error::Interrupted {
        signal,
        message: format!(
            "interrupted by {} {at}: saved {}\ncontinue the run with: vitcore train {kind} --resume {}",
            interrupt::signal_name(signal),
            out.join("last.safetensors").display(),
            out.display()
        ),
    }
}

/// Train a ViT as `cfg` says, on `source`, in the run folder `out` (or, with `opts.resume`,
/// continue the run there from its `last.safetensors`, inside an epoch if it stopped in one).
///
/// Errors: bad data or settings (before anything is written), I/O, divergence, and
/// [`Error::Interrupted`] after a signal (the run is then saved and can be resumed).
pub fn train(cfg: TrainConfig, source: DataSource, out: &Path, opts: &RunOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    cfg.validate()?;
    if let (DataSource::Folder { .. }, true) =
        (&source, cfg.scale > 0.0 || cfg.shear_deg > 0.0 || cfg.elastic.is_some())
    {
        return Err(Error::config(
            "--scale, --shear and --elastic are the digits' augmentation; photos (train folder) use --crop-scale, --flip, --rotate and --jitter",
        ));
    }
    let ckpt_last = out.join("last.safetensors");
    let ckpt_best = out.join("best.safetensors");
    // A resumed run's state is read (not yet used) before anything is written.
    let resumed = match opts.resume {
        true => Some(checkpoint::load(&ckpt_last)?),
        false => None,
    };
    let pos = match &resumed {
        Some((_, meta)) => Position::from_meta(meta, &ckpt_last)?,
        None => Position::default(),
    };
    let data = source.load(&cfg)?;
    let (shape, classes) = (data.train.image_shape(), data.train.num_classes);
    if shape != [cfg.model.channels, cfg.model.image_height, cfg.model.image_width] || classes != cfg.model.num_classes
    {
        return Err(Error::data(
            source.path(),
            None,
            format!(
                "the data has images {shape:?} (C, H, W) and {classes} classes but the model expects {:?} and {}",
                [cfg.model.channels, cfg.model.image_height, cfg.model.image_width],
                cfg.model.num_classes
            ),
        ));
    }
    if data.test.is_none() && cfg.val_fraction == 0.0 {
        return Err(Error::config(
            "a CSV run has no test set, so it needs a validation split to measure accuracy: use --val-fraction > 0",
        ));
    }
    let checksum = resume::data_checksum(&data.train);
    if let Some((_, meta)) = &resumed {
        resume::check_data(meta, &checksum, &source)?;
    }
    let run_meta = HashMap::from([
        (resume::DATA_CHECKSUM.to_string(), checksum),
        ("device".to_string(), opts.device.to_string()),
    ]);
    let (train_set, val_set) = data.train_val(&cfg)?;
    if train_set.is_empty() {
        return Err(Error::data(
            source.path(),
            None,
            "no training images left after the validation split",
        ));
    }
    let train_set = Arc::new(train_set);
    // A new run without --epochs takes its length from its data size, saved as `epochs`.
    let mut cfg = cfg;
    let steps_per_epoch = data::loader::batches_per_epoch(train_set.len(), cfg.batch_size, false);
    if let (Some(budget), false) = (cfg.step_budget.take(), opts.resume) {
        let chosen = budget.epochs(steps_per_epoch, cfg.epochs);
        outln!(
            "epochs: {chosen} ({steps_per_epoch} steps each for {} training images: the step budget of {} steps, \
             {} to {} epochs; --epochs N sets it)",
            train_set.len(),
            budget.steps,
            cfg.epochs,
            budget.max_epochs
        );
        cfg.epochs = chosen;
        let warmup = budget.warmup_epochs(steps_per_epoch, cfg.warmup_epochs, chosen);
        if warmup > cfg.warmup_epochs {
            outln!(
                "warm-up: {warmup:.3} epochs (the budget's {} steps, at most a fifth of the run; --warmup-epochs X sets it)",
                budget.warmup_steps
            );
            cfg.warmup_epochs = warmup;
        }
    }
    let run_files = RUN_FILES.map(|f| (f, out.join(f)));
    let outputs: Vec<(&str, &Path)> = run_files.iter().map(|(f, p)| (*f, p.as_path())).collect();
    let inputs = source.input_files()?;
    fsutil::refuse_overwriting_inputs(&outputs, &inputs.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    if let DataSource::Folder { .. } = source {
        refuse_run_inside(out, &inputs)?;
    }

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if !opts.resume {
        outln!("run folder: {}", out.display());
    }
    if let Some(info) = &data.folder {
        for (f, why) in &info.skipped {
            errln!("skipped {}: {why}", f.display());
        }
        info.write(out)?;
    }
    let removed = fsutil::remove_stale_temp_files(out, None);
    if !removed.is_empty() {
        errln!(
            "removed {} temporary file(s) that an interrupted write left in {}",
            removed.len(),
            out.display()
        );
    }
    let (vit, mut store) = build_model(&cfg)?;
    if let (Some(path), false) = (&cfg.init_from, opts.resume) {
        let pre = crate::pretrained::Pretrained::read(path)?;
        outln!("initialised from {}", path.display());
        for note in pre.load_into(path, &vit, &mut store)? {
            outln!("  {note}");
        }
    }
    let frozen: Vec<crate::autograd::ParamId> = store
        .ids()
        .filter(|&id| cfg.freeze_backbone && !trains_when_frozen(store.name(id)))
        .collect();
    let mut st = OptimState {
        adam: build_optimizer(&cfg)?,
        sched: build_schedule(&cfg, steps_per_epoch)?,
        early: match cfg.early_stopping {
            Some(p) => Some(EarlyStopping::new(p, 0.0)?),
            None => None,
        },
        best_val: f64::INFINITY,
        run_meta,
        margins: Margins::new(train_set.len(), cfg.model.num_classes),
        ema: None,
    };
    let mut history: Vec<EpochLog> = Vec::new();
    let mut last_epoch = cfg.epochs;
    if let Some((tensors, meta)) = &resumed {
        checkpoint::assign_params(&ckpt_last, tensors, &mut store)?;
        st.adam.load_state(&store, tensors, meta)?;
        st.sched.load_state_metadata(meta)?;
        match Margins::from_tensors(&ckpt_last, tensors, train_set.len(), cfg.model.num_classes)? {
            Some(m) => st.margins = m,
            None => outln!("note: this run's checkpoint has no training margins: `vitcore audit` will see only the epochs from now on"),
        }
        if let Some(e) = st.early.as_mut() {
            // Early stopping turned on by this resume starts counting now.
            if meta.contains_key(&format!("{}early.bad_epochs", crate::optim::STATE_PREFIX)) {
                e.load_state_metadata(meta)?;
            }
        }
        if pos.step == 0 && resume::stopped_early(meta, &cfg).is_some() {
            last_epoch = pos.epoch; // only the final evaluation is left
        }
        st.best_val = meta
            .get("best_val_loss")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::INFINITY);
        // Rows past the checkpoint's epoch belong to an epoch that will run again (the process
        // stopped between logging it and checkpointing it): drop them so each epoch has one row.
        history = read_log(&out.join("log.csv"))?
            .into_iter()
            .filter(|e| e.epoch <= pos.epoch)
            .collect();
        let mut text = format!("{LOG_HEADER}\n");
        for e in &history {
            text += &log_row(e);
        }
        fsutil::write_atomic(&out.join("log.csv"), text.as_bytes())?;
        // The changes this resume made (a new --epochs above all) are the run's from now on.
        fsutil::write_atomic(&out.join("config.json"), cfg.to_json().as_bytes())?;
        fsutil::write_atomic(&out.join("data.json"), source.to_json().as_bytes())?;
        for note in &opts.notes {
            outln!("{note}");
        }
        match pos.step {
            0 => outln!(
                "resuming {} after epoch {} (step {})",
                out.display(),
                pos.epoch,
                pos.global_step
            ),
            s => outln!(
                "resuming {} at epoch {}, step {s} of {steps_per_epoch} (step {} overall)",
                out.display(),
                pos.epoch + 1,
                pos.global_step
            ),
        }
    } else {
        fsutil::write_atomic(&out.join("config.json"), cfg.to_json().as_bytes())?;
        fsutil::write_atomic(&out.join("data.json"), source.to_json().as_bytes())?;
        fsutil::write_atomic(&out.join("log.csv"), format!("{LOG_HEADER}\n").as_bytes())?;
    }
    // The moving average starts at the weights as they are now, or is the resumed run's.
    if let Some(decay) = cfg.ema {
        let mut ema = Ema::new(decay, &store)?;
        if let Some((tensors, meta)) = &resumed {
            if !ema.load_state(&ckpt_last, &store, tensors, meta)? {
                outln!("note: this run's checkpoint has no moving average: it starts from the current weights");
            }
        }
        st.ema = Some(ema);
    }
    store.to_device(opts.device)?;
    st.adam.to_device(opts.device)?;
    if let Some(ema) = st.ema.as_mut() {
        ema.to_device(opts.device)?;
    }
    outln!(
        "training ViT ({} parameters) on {} images, validating on {}, {} epochs of {} steps (batch {})",
        store.numel(),
        train_set.len(),
        val_set.len(),
        cfg.epochs,
        steps_per_epoch,
        cfg.batch_size
    );
    // Photos are augmented bilinearly (crop, flip, rotation, jitter); digits by the nearest-pixel
    // rotation and shift of the original MNIST setup, with zoom, shear and elastic distortion
    // when asked for.
    let (photo, augment) = match source {
        DataSource::Folder { .. } => (cfg.photo_augment(), None),
        _ => (None, cfg.digit_augment()),
    };

    let mut global_step = pos.global_step;
    let mut epochs_done = pos.epoch;
    for epoch in pos.epoch + 1..=last_epoch {
        let t0 = Instant::now();
        // The first epoch of a run resumed inside it picks up its running sums.
        let part = match epoch == pos.epoch + 1 {
            true => pos.clone(),
            false => Position::default(),
        };
        let loader = BatchLoader::new(
            train_set.clone(),
            LoaderConfig {
                mean: cfg.mean,
                std: cfg.std,
                channel_norm: cfg.channel_norm.clone(),
                photo: photo.clone(),
                skip: part.step,
                ..LoaderConfig::train(cfg.batch_size, cfg.seed, epoch as u64, augment.clone())
            },
        )?;
        let pb = progress_bar(
            opts.quiet,
            loader.num_batches(),
            format!("epoch {epoch}/{}", cfg.epochs),
        );
        pb.set_position(part.step as u64);
        let (mut loss_sum, mut correct, mut seen, mut step) = (part.loss_sum, part.correct, part.seen, part.step);
        let mut lr = if part.step > 0 { part.lr } else { st.adam.lr() };
        let seconds = |t0: Instant| part.seconds + t0.elapsed().as_secs_f64();
        for batch in loader {
            let n = batch.len();
            let x = Tensor::from_vec(batch.images, &batch.shape)?.to_device(opts.device)?;
            let seed = derive_seed(cfg.seed ^ 0xd50, global_step as u64);
            let (loss_t, logits_t) = forward_backward(&vit, &mut store, x, &batch.labels, cfg.label_smoothing, seed)?;
            if cfg.freeze_backbone {
                for id in frozen.iter().copied() {
                    store.clear_grad(id);
                }
            }
            // Read after the backward is queued (on the GPU, reading waits for the stream), and
            // before the update: a diverged step must not reach the parameters.
            let loss_value = loss_t.item()? as f64;
            if !loss_value.is_finite() {
                return Err(Error::config(format!(
                    "training diverged at epoch {epoch}, step {global_step}: loss is {loss_value} (try a lower --lr)"
                )));
            }
            if let Some(c) = cfg.clip_value {
                clip::clip_grad_value(&mut store, c)?;
            }
            if let Some(c) = cfg.clip_norm {
                clip::clip_grad_norm(&mut store, c)?;
            }
            lr = st.sched.lr(global_step);
            st.adam.set_lr(lr);
            st.adam.step(&mut store)?;
            if let Some(ema) = st.ema.as_mut() {
                ema.update(&store)?;
            }
            let logits = logits_t.values()?;
            for (row, &t) in logits.chunks(cfg.model.num_classes).zip(&batch.labels) {
                correct += (argmax(row) == t as usize) as usize;
            }
            st.margins.record(&batch.indices, &logits, &batch.labels);
            drop((loss_t, logits_t));
            global_step += 1;
            step += 1;
            loss_sum += loss_value * n as f64;
            seen += n;
            if let Some(signal) = opts.interrupt.requested() {
                pb.finish_and_clear();
                let at = Position {
                    epoch: epoch - 1,
                    global_step,
                    step,
                    loss_sum,
                    correct,
                    seen,
                    lr,
                    seconds: seconds(t0),
                };
                st.save_last(&ckpt_last, &store, &at)?;
                return Err(interrupted(signal, &at, steps_per_epoch, out, source.kind()));
            }
            pb.inc(1);
            pb.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                (seen - part.seen) as f64 / t0.elapsed().as_secs_f64()
            ));
        }
        pb.finish_and_clear();
        // With --ema the average is what is validated and kept as best.safetensors.
        if let Some(ema) = st.ema.as_mut() {
            ema.swap(&mut store);
        }
        let val = if val_set.is_empty() {
            None
        } else {
            Some(evaluate(&vit, &store, &val_set, &cfg, false)?)
        };
        let (val_loss, val_acc) = val.as_ref().map_or((f64::NAN, f64::NAN), |v| (v.loss, v.accuracy));
        let log = EpochLog {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc,
            lr,
            seconds: seconds(t0),
        };
        outln!(
            "epoch {epoch:>3}/{}  train loss {:.4} acc {:6.2}%  val loss {:.4} acc {:6.2}%  lr {:.2e}  {:.1}s",
            cfg.epochs,
            log.train_loss,
            100.0 * log.train_acc,
            log.val_loss,
            100.0 * log.val_acc,
            log.lr,
            log.seconds
        );
        append_log(&out.join("log.csv"), &log)?;
        history.push(log);

        // Checkpoints: best by validation loss (or every epoch when there is no validation set).
        let improved = val.is_none() || val_loss < st.best_val;
        if improved {
            st.best_val = if val.is_some() { val_loss } else { st.best_val };
            checkpoint::save_params(
                &ckpt_best,
                &store,
                &[],
                &HashMap::from([("epoch".to_string(), epoch.to_string())]),
            )?;
        }
        if let Some(ema) = st.ema.as_mut() {
            ema.swap(&mut store);
        }
        let stop = match (st.early.as_mut(), val.is_some()) {
            (Some(e), true) => e.should_stop(val_loss),
            _ => false,
        };
        if cfg.schedule.on_plateau() && val.is_some() && st.sched.step_epoch(val_loss) {
            outln!(
                "validation loss stalled: learning rate reduced to {:.2e}",
                st.sched.lr(global_step)
            );
        }
        let at = Position {
            epoch,
            global_step,
            ..Position::default()
        };
        st.save_last(&ckpt_last, &store, &at)?;
        epochs_done = epoch;
        if let Some(signal) = opts.interrupt.requested() {
            return Err(interrupted(signal, &at, steps_per_epoch, out, source.kind()));
        }
        if stop {
            outln!(
                "early stopping: no better validation loss for {} epochs",
                cfg.early_stopping.unwrap_or(0)
            );
            break;
        }
    }

    // Final evaluation of the best checkpoint: the test set, or the validation split for CSV data.
    checkpoint::load_into(&ckpt_best, &mut store)?;
    let (eval_set, on) = match &data.test {
        Some(t) => (t, "test"),
        None => (&val_set, "validation"),
    };
    // With probabilities: predictions.png shows the most confident mistakes first.
    let final_eval = tta::evaluate_maybe_tta(&vit, &store, eval_set, &cfg, true, cfg.tta)?;
    outln!(
        "{on} accuracy (best.safetensors{}): {:.2}% ({}/{})",
        if cfg.tta { ", test-time augmentation" } else { "" },
        100.0 * final_eval.accuracy,
        final_eval.correct,
        final_eval.total
    );
    outln!(
        "confusion matrix ({on} set; rows = true digit, columns = predicted):\n{}",
        final_eval.confusion_table()
    );
    // `trained_epochs` tells a later resume whether these results are current.
    let metrics = serde_json::json!({
        "evaluated_on": on,
        "checkpoint": "best.safetensors",
        "test_time_augmentation": cfg.tta,
        "trained_epochs": epochs_done,
        "result": final_eval,
    });
    fsutil::write_atomic(
        &out.join("test_metrics.json"),
        serde_json::to_string_pretty(&metrics).expect("serialises").as_bytes(),
    )?;
    // From log.csv, as `vitcore plot` draws them (its rounding included): the same pictures.
    pictures::draw(out, &read_log(&out.join("log.csv"))?, &final_eval, eval_set, on)?;
    outln!("pictures: {} ({})", pictures::PICTURES.join(", "), out.display());
    Ok(TrainSummary {
        epochs: history,
        final_eval,
        final_eval_on: on,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A run folder inside a class-folder tree would add its pictures to a class the next time the
/// folder is read: refused before anything is written.
pub fn refuse_run_inside(out: &Path, folders: &[PathBuf]) -> Result<()> {
    let out = std::path::absolute(out).map_err(|e| Error::io(out, e))?;
    for f in folders {
        let f = std::path::absolute(f).map_err(|e| Error::io(f, e))?;
        let canon = |p: &Path| {
            // The nearest existing ancestor, resolved (symlinks), with the rest appended.
            let mut base = p.to_path_buf();
            let mut rest = Vec::new();
            while !base.exists() {
                match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
                    (Some(n), Some(parent)) => {
                        rest.push(n);
                        base = parent.to_path_buf();
                    }
                    _ => break,
                }
            }
            let mut full = base.canonicalize().unwrap_or(base);
            full.extend(rest.iter().rev());
            full
        };
        if canon(&out).starts_with(canon(&f)) {
            return Err(Error::config(format!(
                "--out {} is inside the image folder {}: its pictures would become training images; \
                 choose a run folder outside it",
                out.display(),
                f.display()
            )));
        }
    }
    Ok(())
}

fn append_log(path: &Path, e: &EpochLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|err| Error::io(path, err))?;
    f.write_all(log_row(e).as_bytes()).map_err(|err| Error::io(path, err))
}

fn log_row(e: &EpochLog) -> String {
    format!(
        "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.2}\n",
        e.epoch, e.train_loss, e.train_acc, e.val_loss, e.val_acc, e.lr, e.seconds
    )
}

/// Read a run's `log.csv`.
pub fn read_log(path: &Path) -> Result<Vec<EpochLog>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |k: usize| -> Result<f64> {
            f.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::data(path, Some(i + 1), format!("expected 7 numeric columns ({LOG_HEADER})")))
        };
        out.push(EpochLog {
            epoch: num(0)? as usize,
            train_loss: num(1)?,
            train_acc: num(2)?,
            val_loss: num(3)?,
            val_acc: num(4)?,
            lr: num(5)?,
            seconds: num(6)?,
        });
    }
    Ok(out)
}
