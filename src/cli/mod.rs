//! The command line: `vitcore train | eval | predict | bench | plot | summary | show | attention |
//! audit`. Parsing (clap) and the glue that turns flags into a [`TrainConfig`] or
//! [`BenchOptions`]; the work itself is in `crate::train`, `crate::bench` and `crate::inspect`
//! (the commands that look inside a model are in [`see`]).

pub mod photos;
pub mod see;

use crate::backend::cuda::{resolve_and_report, DeviceChoice};
use crate::backend::Device;
use crate::bench::step::{StepOptions, StepPreset};
use crate::bench::{self, BenchOptions};
use crate::data;
use crate::data::image::DigitOptions;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::nn::{GlobalPool, Init};
use crate::ops::GeluKind;
use crate::output::{self, WhenClosed};
use crate::train::{
    self, resume, DataSource, Interrupt, OptimizerKind, Plan, ResumeRequest, RunOptions, ScheduleKind, TrainConfig,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "vitcore",
    version,
    about = "Train Vision Transformers from scratch: a Rust tensor engine with autograd, a rayon CPU backend and hand-written kernels."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a ViT (MNIST IDX files, a Kaggle digit-recognizer CSV, or photos in class folders).
    ///
    /// A run lives in its folder (--out). Ctrl-C or SIGTERM stops it after the current step, saved
    /// with its place in the epoch (exit status 130 or 143; a second Ctrl-C exits at once), and
    /// `--resume RUN` continues it from there.
    ///
    /// On --resume these flags apply, each with a line saying what changed, and are saved with
    /// the run: --epochs (extend or shorten it), --lr, --min-lr, --early-stopping, --tta,
    /// --device, --quiet, and --data/--train for data that has moved (checked to be the same
    /// images). Any
    /// other setting (model shape, data set, batch size, seed, optimiser, augmentation, ...)
    /// given with another value than the run's is refused, naming its saved value: it would make
    /// a different run.
    ///
    /// If stdout is closed (piped into `head`), training goes on to its end with its lines on
    /// stderr.
    Train {
        #[command(subcommand)]
        data: TrainData,
    },
    /// Evaluate a run's best checkpoint: accuracy and confusion matrix on the MNIST test set (or a
    /// labelled CSV).
    Eval {
        /// The run folder (runs/NAME).
        run: PathBuf,
        /// Folder with the MNIST test files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]).
        #[arg(long, default_value = "data/mnist")]
        data: PathBuf,
        /// Evaluate on a labelled Kaggle-style CSV instead of the MNIST test set.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Which checkpoint: best or last.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Test-time augmentation: average the class probabilities over the image and its
        /// shifts by 1 and 2 pixels left, right, up and down (nine forward passes) [default: the run's
        /// setting, on for the default preset's runs]; `--tta false` turns it off.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        tta: Option<bool>,
        /// Device: auto (the GPU when one can be used, else the CPU, saying why), cpu or cuda.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Predict with a run's best checkpoint: a CSV of images → submission CSV, or one PNG image →
    /// class and probabilities; for a run trained on class folders, one photo → its top classes,
    /// or a folder of photos → a CSV.
    ///
    /// Digits: the model expects what MNIST holds: a light digit on a dark background, gray, at
    /// the model's size (28x28 for MNIST; images are never resized). A PNG is read as a person
    /// sees it: colour becomes gray, 16 bits become 8, a drawing on a transparent background is
    /// taken from its alpha channel, and a dark digit on light paper is inverted; each change is
    /// said in one line on stderr. A blank image is an error.
    ///
    /// Photos (a run of `train folder`, or a pretrained CHECKPOINT.safetensors with --heads):
    /// JPEG or PNG of any size, resized as the run was trained; the class names are the run's.
    Predict {
        /// The run folder (runs/NAME), or a timm / Hugging Face ViT checkpoint
        /// (`.safetensors`, with --heads) to try before fine-tuning it.
        run: PathBuf,
        /// A Kaggle test.csv (pixel0..pixel783), or one PNG image of a digit (gray, RGB, with or
        /// without alpha, 8 or 16 bits) at the model's size; for photos, one image or a folder.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the CSV (`ImageId,Label` for a Kaggle CSV [default: submission.csv];
        /// `file,class,probability,...` for a folder of photos [default: predictions.csv]).
        /// Never one of the input files.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Photos: how many of the most likely classes to give.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// A bare checkpoint's attention heads (they cannot be read from its tensors: timm's
        /// ViT-Ti/S/B have 3/6/12).
        #[arg(long)]
        heads: Option<usize>,
        /// Keep a PNG's polarity as it is: do not invert an image whose background looks light
        /// (median pixel above 127).
        #[arg(long)]
        no_auto_invert: bool,
        /// Which checkpoint: best or last.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Test-time augmentation: average the class probabilities over the image and its
        /// shifts by 1 and 2 pixels left, right, up and down (nine forward passes) [default: the run's
        /// setting, on for the default preset's runs]; `--tta false` turns it off.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        tta: Option<bool>,
        /// Device: auto (the GPU when one can be used, else the CPU, saying why), cpu or cuda.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Measure the speed of vitcore's kernels.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Redraw a run's pictures (curves.png, confusion.png, predictions.png) from its log.csv and
    /// best.safetensors.
    Plot(see::PlotArgs),
    /// Every layer of the model by its parameter name, with its output shape, parameter count
    /// and FLOPs per image, and the totals.
    Summary(see::SummaryArgs),
    /// Show how the model sees its input.
    Show {
        #[command(subcommand)]
        what: see::ShowWhat,
    },
    /// What the class token (or, pooled, the mean patch row) attends to in one image: each head
    /// of the last block, and attention rollout through all blocks, over the image (a PNG).
    Attention(see::AttentionArgs),
    /// Rank a run's training images by how likely their label is wrong (area under the margin,
    /// Pleiss et al. 2020): audit.csv and a contact sheet audit.png in the run folder.
    Audit(see::AuditArgs),
    /// Render a synthetic data set (no download needed).
    MakeDataset {
        #[command(subcommand)]
        what: photos::MakeDatasetWhat,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Time every kernel, forward and backward, at the ViT's shapes (seed preset, small config) and
    /// at large shapes: median of many runs after warm-up, input sets rotated so the caches do not
    /// flatter it, the result validated after timing. Prints kernel, shape, median time, achieved
    /// GB/s or GFLOP/s, and the ratio to its yardstick: the copy bandwidth measured in the same
    /// run (memory-bound kernels), the CPU's theoretical peak or, on the GPU, cuBLAS on the same
    /// shape (matrix products). Exits non-zero if a validation fails.
    Kernels(BenchKernelsArgs),
    /// Time one whole training step (forward, cross-entropy, backward, Adam) of a preset on a
    /// fixed random batch: median over --steps after --warmup, each step ending with the loss
    /// read back. Prints one JSON record in the fields of `benches/torch_train.py`, so vitcore
    /// and PyTorch can be compared side by side on the same machine.
    Step(BenchStepArgs),
    /// Time `train folder`'s data loading alone: decoding and resizing every photo of DIR (once,
    /// in parallel), then one augmented, normalised epoch of batches from memory. Prints one JSON
    /// record with images/s of each, to set beside `bench step`'s.
    Loader(BenchLoaderArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchLoaderArgs {
    /// Class folders of JPEG/PNG photos (`vitcore make-dataset inspection DIR` makes some).
    pub dir: PathBuf,
    /// The input size, resize, batch, augmentation and normalisation of this preset: photos or
    /// flowers.
    #[arg(long, value_enum, default_value = "photos")]
    pub preset: PresetArg,
    /// Override the preset's input side in pixels.
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    /// Override the preset's batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also write the JSON record to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchStepArgs {
    /// The model and batch: seed (the original PyTorch write-up's), small, default (`train
    /// mnist`'s) or flowers (the Keras write-up's 398M-parameter model; about 9 GB).
    #[arg(long, value_enum, default_value = "seed")]
    pub preset: StepPreset,
    /// Device: cpu, cuda, or auto (the GPU when one can be used, else the CPU, saying why).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Override the preset's batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also print where the step's time goes, op by op (CPU only).
    #[arg(long)]
    pub profile: bool,
    /// Also write the JSON record to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchKernelsArgs {
    /// Device to benchmark: cpu, cuda, or auto (the GPU when one can be used, else the CPU).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Also write every record (and the device description) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Small shapes and few runs: a smoke test that takes seconds (its numbers are not the
    /// machine's speed).
    #[arg(long)]
    pub quick: bool,
    /// Only the benchmarks whose "kernel phase shape" line contains SUBSTR (e.g. `linear`,
    /// `bwd`, `seed fc1`).
    #[arg(long, value_name = "SUBSTR")]
    pub filter: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TrainData {
    /// Train on MNIST IDX files (gzip or raw) from --data (default data/mnist).
    Mnist {
        /// Folder with the MNIST IDX files (train-images-idx3-ubyte[.gz], ...) [default: data/mnist;
        /// with --resume: the run's own, or its new place if it has moved].
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        flags: TrainFlags,
    },
    /// Train on a Kaggle digit-recognizer train.csv (label,pixel0..pixel783).
    Csv {
        /// The training CSV (header `label,pixel0,...`). With --resume: not needed (the run's own),
        /// or its new place if it has moved.
        #[arg(long, required_unless_present = "resume")]
        train: Option<PathBuf>,
        #[command(flatten)]
        flags: TrainFlags,
    },
    /// Train on photos in one folder per class (JPEG/PNG of any size; torchvision's ImageFolder
    /// layout): class names from the folder names (saved in the run folder as classes.json),
    /// images resized to --image-size, a stratified 80/10/10 split (saved as file lists), photo
    /// augmentation. Hidden and non-image files are skipped silently; an unreadable image is
    /// skipped with one line naming it (listed in skipped.txt; --strict makes it an error).
    Folder(photos::FolderArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetArg {
    /// The original PyTorch MNIST setup (embed 16, 4 layers, FF 2048, Adam 1e-4, batch 512, 40 epochs).
    Seed,
    /// vitcore's recipe for ≥ 99% test accuracy in minutes on a CPU (for `train folder`: photos).
    Default,
    /// `train folder`'s default: the default recipe at 64×64 RGB, patch 8, photo augmentation.
    Photos,
    /// The Keras flowers write-up value for value (`train folder`): 200×200 RGB, patch 25, 12
    /// layers, hidden 768, 12 heads of key width 768, softmax head, Adam 1e-4 clipped by value,
    /// reduce-on-plateau, early stopping; 398M parameters.
    Flowers,
}

/// Every training setting; each overrides the preset's value.
#[derive(Args, Debug, Clone)]
pub struct TrainFlags {
    /// Starting configuration [default: default].
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Run folder (default runs/<data>-<preset>, numbered if it exists).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (at the step where Ctrl-C stopped
    /// it). Only the flags marked "applies on --resume" (and --device, --quiet, --data/--train
    /// for data that has moved) may differ from the run's; any other is refused.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    /// Number of epochs (passes over the training images) [default preset: from the data size,
    /// 15 to 24: enough for about 20,256 steps, so 24 up to MNIST's size]. Applies on --resume:
    /// extends or shortens the run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per training step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate. Applies on --resume.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed for initialisation, shuffling, augmentation and dropout (a CPU run is repeatable).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Optimiser: adam (L2 weight decay) or adamw (decoupled weight decay).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptArg>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<SchedArg>,
    /// Epochs of linear warmup (warmup-cosine schedule) [default preset: 1, or longer to last
    /// 240 steps when the epochs come from the step budget].
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Final / minimum learning rate (warmup-cosine and plateau schedules). Applies on --resume.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Label smoothing of the cross-entropy target, in [0, 1).
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Clip each gradient element to ±this value.
    #[arg(long)]
    pub clip_value: Option<f32>,
    /// Stop after this many epochs without a better validation loss. Applies on --resume.
    #[arg(long)]
    pub early_stopping: Option<usize>,
    /// Random rotation range in degrees (nearest, fill 0).
    #[arg(long)]
    pub rotate: Option<f32>,
    /// Random shift range in pixels.
    #[arg(long)]
    pub shift: Option<f32>,
    /// Random zoom of digits: the factor is uniform in [1 - S, 1 + S] (default preset 0.1, others
    /// 0 = off).
    #[arg(long, value_name = "S")]
    pub scale: Option<f32>,
    /// Random shear of digits along x, in degrees, uniform in [-DEG, DEG] (default preset 10,
    /// others 0 = off).
    #[arg(long, value_name = "DEG")]
    pub shear: Option<f32>,
    /// Elastic distortion of digits (Simard et al. 2003): displacement ALPHA and smoothing SIGMA
    /// in pixels, e.g. 34,4 (sampled bilinearly).
    #[arg(long, value_name = "ALPHA,SIGMA", value_parser = parse_pair)]
    pub elastic: Option<[f32; 2]>,
    /// Validate and keep (best.safetensors) an exponential moving average of the weights with
    /// this decay per step, e.g. 0.999 (TensorFlow's warm-up: min(decay, (1+t)/(10+t))).
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Score the test set (and later `eval` / `predict` of the run) by test-time augmentation:
    /// the mean probabilities of each image and its shifts by 1 and 2 pixels along each axis
    /// (nine views) [default preset: on;
    /// others: off]. Applies on --resume.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub tta: Option<bool>,
    /// Fraction of the training images held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Patch size in pixels (must divide the image size).
    #[arg(long)]
    pub patch: Option<usize>,
    /// Embedding width D.
    #[arg(long)]
    pub embed_dim: Option<usize>,
    /// Number of encoder blocks.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Attention heads (must divide the embedding width).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Each attention head's q/k/v width (Keras's `key_dim`); default: embed-dim / heads.
    #[arg(long)]
    pub key_dim: Option<usize>,
    /// What the head reads (timm's `global_pool`): the class token (`token`, which brings the
    /// class token back unless --class-token false), or the mean of the patch tokens (`avg`;
    /// the digits' default).
    #[arg(long, value_enum)]
    pub global_pool: Option<PoolArg>,
    /// Prepend a class token (timm's `class_token`); false needs --global-pool avg. Default:
    /// false for the digits, true for photos and the seed preset. `--class-token true` alone
    /// keeps the digits' average pooling; `--global-pool token` gives the original ViT.
    #[arg(long)]
    pub class_token: Option<bool>,
    /// Hidden width of each block's MLP.
    #[arg(long)]
    pub mlp_dim: Option<usize>,
    /// Dropout after the embedding, attention projection and MLP layers.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Dropout on the attention weights.
    #[arg(long)]
    pub attn_dropout: Option<f32>,
    /// GELU form: erf (exact, PyTorch default) or tanh.
    #[arg(long, value_enum)]
    pub gelu: Option<GeluArg>,
    /// Initialisation: torch (PyTorch defaults), timm (truncated normal 0.02), keras (Keras's
    /// Glorot-uniform defaults, the flowers preset's), or a pretrained
    /// timm / Hugging Face ViT checkpoint (FILE.safetensors, `train folder` only) to fine-tune:
    /// the model's shape is read from it, its position embedding resampled to --image-size and
    /// its head replaced when the class count differs.
    #[arg(long, value_parser = parse_init, value_name = "torch|timm|keras|FILE")]
    pub init: Option<InitSpec>,
    /// Use only the first N training images (quick experiments).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Device: auto (the GPU when one can be used, else the CPU, saying why), cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptArg {
    Adam,
    Adamw,
}
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchedArg {
    Constant,
    WarmupCosine,
    Plateau,
    /// Reduce on plateau by Keras's rule (absolute min_delta 1e-4, lowers on the patience-th bad epoch).
    PlateauKeras,
}
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolArg {
    Token,
    Avg,
}
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GeluArg {
    Erf,
    Tanh,
}
/// `--init`: a scheme, or pretrained weights.
#[derive(Clone, Debug)]
pub enum InitSpec {
    Scheme(Init),
    Checkpoint(PathBuf),
}

/// `A,B`: two numbers (`--elastic 34,4`).
fn parse_pair(s: &str) -> std::result::Result<[f32; 2], String> {
    let v: Vec<Option<f32>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
    match v[..] {
        [Some(a), Some(b)] => Ok([a, b]),
        _ => Err(format!("expected two numbers A,B (e.g. 34,4), found `{s}`")),
    }
}

fn parse_init(s: &str) -> std::result::Result<InitSpec, String> {
    match s {
        "torch" => Ok(InitSpec::Scheme(Init::Torch)),
        "timm" => Ok(InitSpec::Scheme(Init::Timm)),
        "keras" => Ok(InitSpec::Scheme(Init::Keras)),
        _ if s.ends_with(".safetensors") => Ok(InitSpec::Checkpoint(PathBuf::from(s))),
        _ => Err(format!(
            "expected torch, timm, keras or a pretrained checkpoint FILE.safetensors, found `{s}`"
        )),
    }
}

impl PresetArg {
    pub fn name(self) -> &'static str {
        match self {
            PresetArg::Seed => "seed",
            PresetArg::Default => "default",
            PresetArg::Photos => "photos",
            PresetArg::Flowers => "flowers",
        }
    }
}

impl TrainFlags {
    /// The preset with every given flag applied.
    pub fn config(&self) -> TrainConfig {
        let name = self.preset.unwrap_or(PresetArg::Default).name();
        self.apply(TrainConfig::preset(name).expect("every PresetArg names a preset"))
    }

    /// `c` with every given flag applied.
    pub fn apply(&self, mut c: TrainConfig) -> TrainConfig {
        macro_rules! set {
            ($($flag:ident => $field:expr),* $(,)?) => { $( if let Some(v) = self.$flag { $field = v; } )* };
        }
        set!(epochs => c.epochs, batch_size => c.batch_size, lr => c.lr, seed => c.seed,
             weight_decay => c.weight_decay, warmup_epochs => c.warmup_epochs, min_lr => c.min_lr,
             label_smoothing => c.label_smoothing, rotate => c.rotate_deg, shift => c.shift_px,
             scale => c.scale, shear => c.shear_deg,
             val_fraction => c.val_fraction, patch => c.model.patch, embed_dim => c.model.embed_dim,
             depth => c.model.depth, heads => c.model.heads, mlp_dim => c.model.mlp_dim,
             dropout => c.model.dropout, attn_dropout => c.model.attn_dropout);
        if let Some(b) = self.batch_size {
            c.eval_batch_size = c.eval_batch_size.max(b);
        }
        match (self.epochs, &mut c.step_budget, self.warmup_epochs) {
            (Some(_), _, _) => c.step_budget = None,        // a given --epochs always wins
            (None, Some(b), Some(_)) => b.warmup_steps = 0, // and so does --warmup-epochs
            _ => {}
        }
        if self.key_dim.is_some() {
            c.model_options.key_dim = self.key_dim;
        }
        if let Some(p) = self.global_pool {
            c.model_options.global_pool = match p {
                PoolArg::Token => GlobalPool::Token,
                PoolArg::Avg => GlobalPool::Avg,
            };
            // Reading the class token needs one: `--global-pool token` alone gives timm's model.
            if c.model_options.global_pool == GlobalPool::Token && self.class_token.is_none() {
                c.model_options.no_class_token = false;
            }
        }
        if let Some(yes) = self.class_token {
            c.model_options.no_class_token = !yes;
        }
        if self.clip_norm.is_some() {
            c.clip_norm = self.clip_norm;
        }
        if self.clip_value.is_some() {
            c.clip_value = self.clip_value;
        }
        if self.early_stopping.is_some() {
            c.early_stopping = self.early_stopping;
        }
        if self.elastic.is_some() {
            c.elastic = self.elastic;
        }
        if self.ema.is_some() {
            c.ema = self.ema;
        }
        if let Some(t) = self.tta {
            c.tta = t;
        }
        c.train_limit = self.train_limit.or(c.train_limit);
        c.test_limit = self.test_limit.or(c.test_limit);
        if let Some(o) = self.optimizer {
            c.optimizer = match o {
                OptArg::Adam => OptimizerKind::Adam,
                OptArg::Adamw => OptimizerKind::AdamW,
            };
        }
        if let Some(s) = self.schedule {
            c.schedule = match s {
                SchedArg::Constant => ScheduleKind::Constant,
                SchedArg::WarmupCosine => ScheduleKind::WarmupCosine,
                SchedArg::Plateau => ScheduleKind::Plateau,
                SchedArg::PlateauKeras => ScheduleKind::PlateauKeras,
            };
        }
        if let Some(g) = self.gelu {
            c.model.gelu = match g {
                GeluArg::Erf => GeluKind::Erf,
                GeluArg::Tanh => GeluKind::Tanh,
            };
        }
        match &self.init {
            Some(InitSpec::Scheme(i)) => c.model.init = *i,
            // Absolute, as the data's path: the run names its starting point wherever it is read.
            Some(InitSpec::Checkpoint(p)) => c.init_from = Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            None => {}
        }
        c
    }
}

/// A fresh run folder: `base`, else `base-2`, `base-3`, ... (never overwrite a run).
fn fresh_run_dir(base: &Path) -> PathBuf {
    if !base.exists() {
        return base.to_path_buf();
    }
    (2..)
        .map(|i| PathBuf::from(format!("{}-{i}", base.display())))
        .find(|p| !p.exists())
        .expect("some numbered folder is free")
}

/// Resolve `--device`, saying on stderr what was chosen.
fn pick_device(choice: DeviceChoice) -> Result<Device> {
    Ok(resolve_and_report(choice)?.device())
}

fn run_train(kind: &'static str, data: Option<PathBuf>, flags: &TrainFlags) -> Result<()> {
    run_train_with(kind, data, flags, None)
}

/// [`run_train`], with the class-folder command's own arguments for `train folder`.
fn run_train_with(
    kind: &'static str,
    data: Option<PathBuf>,
    flags: &TrainFlags,
    folder: Option<&photos::FolderArgs>,
) -> Result<()> {
    // A run's real output is its folder: a closed stdout must not stop it (see crate::output).
    output::when_stdout_closed(WhenClosed::Stderr);
    // Before anything is printed: once a line is out, Ctrl-C stops the run cleanly.
    let interrupt = Interrupt::install()?;
    let (cfg, source, out, notes, saved_device) = match &flags.resume {
        Some(run) => {
            let request = ResumeRequest {
                run: run.clone(),
                kind,
                data,
                preset: flags.preset.map(|p| p.name().to_string()),
                out: flags.out.clone(),
            };
            // A photo flag that cannot be parsed is reported before the resume is planned.
            if let Some(f) = folder {
                f.photo.apply(flags.apply(TrainConfig::photos_preset()))?;
            }
            let apply = |saved: TrainConfig| {
                let c = flags.apply(saved);
                match folder {
                    Some(f) => f.photo.apply(c.clone()).unwrap_or(c),
                    None => c,
                }
            };
            match resume::plan(&request, apply)? {
                Plan::NothingToDo(why) => {
                    outln!("{why}");
                    return Ok(());
                }
                Plan::Continue(c) => (c.cfg, c.source, run.clone(), c.notes, c.saved_device),
            }
        }
        None => {
            if let (Some(InitSpec::Checkpoint(p)), None) = (&flags.init, folder) {
                return Err(Error::config(format!(
                    "--init {}: fine-tuning pretrained weights works with `vitcore train folder` (photos)",
                    p.display()
                )));
            }
            let cfg = match folder {
                Some(f) => photos::new_config(f, data.as_deref())?,
                None => flags.config(),
            };
            let out = match &flags.out {
                Some(out) if out.join("last.safetensors").exists() => {
                    return Err(Error::config(format!(
                        "{} already holds a run: pass --resume {} to continue it, or another --out",
                        out.display(),
                        out.display()
                    )));
                }
                Some(out) => out.clone(),
                None => fresh_run_dir(&PathBuf::from(format!("runs/{kind}-{}", cfg.preset))),
            };
            cfg.validate()?;
            let path = data.unwrap_or_else(|| PathBuf::from("data/mnist"));
            let source = match (kind, folder) {
                (_, Some(f)) => DataSource::Folder {
                    dir: path,
                    val: f.val.clone(),
                    test: f.test.clone(),
                },
                ("csv", _) => DataSource::Csv { train: path },
                _ => DataSource::Mnist { dir: path },
            };
            // Absolute, so that the run folder names its data wherever it is resumed from.
            (cfg, source.absolute()?, out, Vec::new(), None)
        }
    };
    let device = pick_device(flags.device)?;
    let mut notes = notes;
    if let Some(was) = saved_device.filter(|d| *d != device.to_string()) {
        notes.push(format!("resume: --device {device} (the run was on {was})"));
    }
    train::train(
        cfg,
        source,
        &out,
        &RunOptions {
            resume: flags.resume.is_some(),
            quiet: flags.quiet,
            device,
            notes,
            interrupt,
        },
    )?;
    Ok(())
}

/// Run the parsed command line (on a thread of the CPU backend's pool: see
/// [`crate::backend::cpu::on_worker_pool`]).
pub fn run(cli: Cli) -> Result<()> {
    crate::backend::cpu::on_worker_pool(|| dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench {
            what: BenchWhat::Kernels(args),
        } => {
            bench::run_kernels(&BenchOptions {
                device: args.device,
                quick: args.quick,
                filter: args.filter,
                json: args.json,
            })?;
            Ok(())
        }
        Command::Bench {
            what: BenchWhat::Step(args),
        } => {
            bench::step::run_step(&StepOptions {
                preset: args.preset,
                device: args.device,
                steps: args.steps,
                warmup: args.warmup,
                batch: args.batch,
                profile: args.profile,
                json: args.json,
            })?;
            Ok(())
        }
        Command::Bench {
            what: BenchWhat::Loader(args),
        } => {
            let mut cfg = TrainConfig::preset(args.preset.name())?;
            if let Some(n) = args.image_size {
                (cfg.model.image_height, cfg.model.image_width) = (n, n);
            }
            cfg.batch_size = args.batch.unwrap_or(cfg.batch_size);
            bench::loader::run_loader(&bench::loader::LoaderOptions {
                dir: args.dir,
                cfg,
                json: args.json,
            })?;
            Ok(())
        }
        Command::Plot(a) => see::plot(a),
        Command::Summary(a) => see::summary(a),
        Command::Show { what } => see::show(what),
        Command::Attention(a) => see::attention(a),
        Command::Audit(a) => see::audit(a),
        Command::Train {
            data: TrainData::Mnist { data, flags },
        } => run_train("mnist", data, &flags),
        Command::Train {
            data: TrainData::Csv { train, flags },
        } => run_train("csv", train, &flags),
        Command::Train {
            data: TrainData::Folder(f),
        } => run_train_with("folder", f.dir.clone(), &f.flags, Some(&f)),
        Command::MakeDataset { what } => photos::make_dataset(what),
        Command::Eval {
            run,
            data,
            csv,
            checkpoint,
            tta,
            device,
        } => {
            let (cfg, vit, mut store) = train::load_run(&run, &checkpoint)?;
            store.to_device(pick_device(device)?)?;
            let (ds, name) = match &csv {
                Some(path) => (data::csv::load_kaggle_csv(path)?, path.display().to_string()),
                None => (
                    data::load_mnist_test(&data)?,
                    format!("MNIST test set ({})", data.display()),
                ),
            };
            if ds.labels.is_none() {
                return Err(Error::data(
                    csv.as_deref().unwrap_or(&data),
                    Some(1),
                    "has no labels to evaluate against",
                ));
            }
            check_image_shape(&cfg, ds.image_shape(), csv.as_deref().unwrap_or(&data))?;
            let tta = tta.unwrap_or(cfg.tta);
            let r = train::tta::evaluate_maybe_tta(&vit, &store, &ds, &cfg, false, tta)?;
            let how = match tta {
                true => format!(" with test-time augmentation ({} views)", train::tta::views().len()),
                false => String::new(),
            };
            outln!(
                "{name}{how}: accuracy {:.2}% ({}/{}), loss {:.4}",
                100.0 * r.accuracy,
                r.correct,
                r.total,
                r.loss
            );
            outln!(
                "confusion matrix (rows = true class, columns = predicted):\n{}",
                r.confusion_table()
            );
            Ok(())
        }
        Command::Predict {
            run,
            input,
            out,
            top_k,
            heads,
            checkpoint,
            tta,
            device,
            no_auto_invert,
        } => {
            if run.is_file() || run.extension().is_some_and(|e| e == "safetensors") {
                return photos::predict_checkpoint(
                    &run,
                    heads,
                    &input,
                    top_k,
                    out.as_deref(),
                    device,
                    tta.unwrap_or(false),
                );
            }
            if let Some(classes) = train::read_classes(&run)? {
                return photos::predict_run(&run, classes, &input, top_k, out.as_deref(), &checkpoint, device, tta);
            }
            let out = out.unwrap_or_else(|| PathBuf::from("submission.csv"));
            let is_csv = input.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if is_csv {
                let ckpt = run.join(format!("{checkpoint}.safetensors"));
                fsutil::refuse_overwriting_inputs(&[("--out", &out)], &[&input, &run.join("config.json"), &ckpt])?;
            }
            let (cfg, vit, mut store) = train::load_run(&run, &checkpoint)?;
            store.to_device(pick_device(device)?)?;
            let tta = tta.unwrap_or(cfg.tta);
            if is_csv {
                let ds = data::csv::load_kaggle_csv(&input)?;
                check_image_shape(&cfg, ds.image_shape(), &input)?;
                let r = train::tta::evaluate_maybe_tta(&vit, &store, &ds, &cfg, false, tta)?;
                let mut text = String::from("ImageId,Label\n");
                for (i, p) in r.predictions.iter().enumerate() {
                    text += &format!("{},{p}\n", i + 1);
                }
                if let (Some(dir), Some(name)) = (out.parent(), out.file_name()) {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    fsutil::remove_stale_temp_files(dir, Some(name));
                }
                fsutil::write_atomic(&out, text.as_bytes())?;
                outln!("wrote {} predictions to {}", r.predictions.len(), out.display());
            } else {
                let m = &cfg.model;
                if m.channels != 1 {
                    return Err(Error::config("predicting one image supports grayscale models only"));
                }
                let opts = DigitOptions {
                    auto_invert: !no_auto_invert,
                };
                let (ds, notes) =
                    data::image::load_digit_dataset(&input, m.image_height, m.image_width, m.num_classes, opts)?;
                if !notes.is_empty() {
                    errln!("{}: {}", input.display(), notes.join("; "));
                }
                let r = train::tta::evaluate_maybe_tta(&vit, &store, &ds, &cfg, true, tta)?;
                outln!("{}: class {}", input.display(), r.predictions[0]);
                for (c, p) in r.probabilities[0].iter().enumerate() {
                    outln!("  {c}: {:6.2}%", 100.0 * p);
                }
            }
            Ok(())
        }
    }
}

fn check_image_shape(cfg: &TrainConfig, found: [usize; 3], path: &Path) -> Result<()> {
    let m = &cfg.model;
    let expected = [m.channels, m.image_height, m.image_width];
    if found != expected {
        return Err(Error::data(
            path,
            None,
            format!("images are {found:?} (C, H, W) but the model expects {expected:?}"),
        ));
    }
    Ok(())
}
