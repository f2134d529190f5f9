//! Training configuration and the presets.
//!
//! A run is fully described by a [`TrainConfig`]; it is written to `runs/<name>/config.json` so
//! that `--resume`, `eval` and `predict` rebuild exactly the same model.

use crate::data::folder::ResizeMode;
use crate::data::{Augment, Elastic, PhotoAugment};
use crate::error::{Error, Result};
use crate::nn::{GlobalPool, Init, VitConfig, VitOptions};
use crate::ops::GeluKind;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`).
    Adam,
    /// Adam with decoupled weight decay (`torch.optim.AdamW`), not applied to biases, norms and
    /// embeddings.
    AdamW,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    /// Linear warmup for `warmup_epochs`, then cosine decay to `min_lr` at the last step.
    WarmupCosine,
    /// Multiply the lr by `plateau_factor` when the validation loss stalls for `plateau_patience`.
    Plateau,
    /// `Plateau` with Keras's `ReduceLROnPlateau` rule (absolute `min_delta`, lowering on the
    /// `patience`-th bad epoch; see `optim::schedule`).
    PlateauKeras,
}

impl ScheduleKind {
    /// Whether the rate follows the validation loss (stepped once an epoch).
    pub fn on_plateau(self) -> bool {
        matches!(self, ScheduleKind::Plateau | ScheduleKind::PlateauKeras)
    }
}

/// Training length from a step budget, used when `--epochs` is not given: small data sets
/// get more epochs, so they get enough optimiser steps to learn, and a warm-up of enough steps.
///
/// `epochs = clamp(⌈steps / steps_per_epoch⌉, min_epochs, max_epochs)` where `min_epochs` is
/// the preset's `epochs`; the warm-up lasts at least `warmup_steps` (unless `--warmup-epochs`
/// is given), but at most a fifth of the run. The default preset's budget is 36 epochs of the
/// 844 steps MNIST's 54,000 training images make at batch 64 (30,384 steps), and its cap is
/// 36 epochs, so every set up to MNIST's size trains 36 epochs and only larger ones fewer
/// (down to 15). The cap is set by time: the default when the budget was introduced (15 epochs
/// at batch 128) is the yardstick, and a run may take at most twice its wall time. With the
/// AVX-512 matrix products, the ops run from a pool thread and 16 tokens an image (no class
/// token), a 5,400-row run of 36 epochs takes 1.77× that and MNIST's about 1.78× (measured
/// side by side). Its warm-up of at least 240 steps is one epoch down
/// to 15,360 training images and longer below: 3.2 epochs of the 76 steps 5,400 rows make,
/// where one epoch would let the rate reach its peak before the first attention patterns form.
/// Measured in BENCHMARKS.md ("Accuracy at every data size").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepBudget {
    pub steps: usize,
    pub max_epochs: usize,
    /// The warm-up's least length in steps.
    #[serde(default)]
    pub warmup_steps: usize,
}

impl StepBudget {
    /// The epochs to train when an epoch is `steps_per_epoch` steps, at least `min_epochs`.
    pub fn epochs(&self, steps_per_epoch: usize, min_epochs: usize) -> usize {
        let wanted = self.steps.div_ceil(steps_per_epoch.max(1));
        wanted.clamp(min_epochs, self.max_epochs.max(min_epochs))
    }

    /// The warm-up in epochs of a run of `epochs`: `warmup_epochs`, or longer to last
    /// `warmup_steps`, but not past a fifth of the run (a tiny data set's epochs are a step or
    /// two: 120 steps would be most of its training).
    pub fn warmup_epochs(&self, steps_per_epoch: usize, warmup_epochs: f64, epochs: usize) -> f64 {
        let wanted = self.warmup_steps as f64 / steps_per_epoch.max(1) as f64;
        warmup_epochs.max(wanted.min(0.2 * epochs as f64))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: String,
    pub model: VitConfig,
    /// Architecture options other than timm's (left out of `config.json` at the default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub model_options: VitOptions,
    /// Epochs to train (the least, under a `step_budget`).
    pub epochs: usize,
    /// When set, a new run picks its epochs from its data size ([`StepBudget`]) and saves the
    /// result in `epochs` (and this as `None`) in its `config.json`; `--epochs` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_budget: Option<StepBudget>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// `eps` is TensorFlow/Keras's ε̂, added to `√v` before Adam's bias correction rather than
    /// after it (`optim::adam`); left out of `config.json` when false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eps_hat: bool,
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    pub plateau_factor: f64,
    pub plateau_patience: usize,
    pub label_smoothing: f32,
    /// Clip gradients to this global L2 norm.
    pub clip_norm: Option<f64>,
    /// Clip each gradient element to ±this.
    pub clip_value: Option<f32>,
    /// Stop after this many epochs without a better validation loss.
    pub early_stopping: Option<usize>,
    /// Validate, and keep as `best.safetensors`, an exponential moving average of the weights
    /// with this decay per step (`--ema`; see `optim::ema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
    /// Score the test set, and let `eval` / `predict` score this run's inputs, by test-time
    /// augmentation: the mean probabilities of each image and its shifts by 1 and 2 pixels (`--tta`;
    /// `train::tta`). Validation, which picks `best.safetensors`, stays a single pass.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tta: bool,
    /// Random rotation in degrees (nearest, fill 0) and shift in pixels.
    pub rotate_deg: f32,
    pub shift_px: f32,
    /// Random zoom of the digits' affine augmentation: the factor is uniform in
    /// `[1 - scale, 1 + scale]` (`--scale`; 0 = off, left out of `config.json`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub scale: f32,
    /// Random shear along x in degrees (`--shear`; 0 = off).
    #[serde(default, skip_serializing_if = "is_default")]
    pub shear_deg: f32,
    /// Elastic distortion `[alpha, sigma]` in pixels (`--elastic A,S`; Simard et al. 2003).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic: Option<[f32; 2]>,
    /// Pixel normalisation `(p/255 - mean)/std`.
    pub mean: f32,
    pub std: f32,
    pub val_fraction: f64,
    /// Seed of the validation split (the original used 42).
    pub split_seed: u64,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Use only the first N training images (quick experiments and tests).
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,

    // Photos (`train folder`); each is left out of `config.json` at its default, so the digit
    // presets' files are as before.
    /// Fraction of a class folder set held out for the test (`--test-fraction`; 0 with `--test DIR`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub test_fraction: f64,
    /// How a photo of another size or shape becomes the model's input (`--resize`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub resize: ResizeMode,
    /// An unreadable image is an error instead of being skipped (`--strict`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub strict: bool,
    /// Random resized crop's area range (`--crop-scale LO,HI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_scale: Option<[f32; 2]>,
    /// Random horizontal flip (`--flip`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub flip: bool,
    /// Colour jitter strength (`--jitter`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub jitter: f32,
    /// Per-channel `[mean, std]`, replacing `mean`/`std` (`--norm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_norm: Option<Vec<[f32; 2]>>,
    /// Start from these pretrained weights (timm or Hugging Face ViT safetensors, `--init FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// Train only the head (`--freeze backbone`: a linear probe).
    #[serde(default, skip_serializing_if = "is_default")]
    pub freeze_backbone: bool,
    /// Layer-wise learning-rate decay (`--layer-decay`): block `i` of `L` learns at
    /// `lr · decay^(L − i)`, the embeddings at `lr · decay^(L + 1)`, the final norm and head at `lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl TrainConfig {
    /// The original PyTorch MNIST setup, value for value.
    pub fn seed_preset() -> TrainConfig {
        TrainConfig {
            preset: "seed".into(),
            model: VitConfig {
                image_height: 28,
                image_width: 28,
                channels: 1,
                patch: 4,
                embed_dim: 16,
                depth: 4,
                heads: 8,
                mlp_dim: 2048,
                num_classes: 10,
                dropout: 0.001,
                attn_dropout: 0.001,
                ln_eps: 1e-5,
                gelu: GeluKind::Erf,
                init: Init::Torch,
                identical_blocks: true,
            },
            model_options: VitOptions::default(),
            epochs: 40,
            step_budget: None,
            batch_size: 512,
            eval_batch_size: 512,
            optimizer: OptimizerKind::Adam,
            lr: 1e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            eps_hat: false,
            weight_decay: 0.0,
            schedule: ScheduleKind::Constant,
            warmup_epochs: 0.0,
            min_lr: 0.0,
            plateau_factor: 0.5,
            plateau_patience: 3,
            label_smoothing: 0.0,
            clip_norm: None,
            clip_value: None,
            early_stopping: None,
            ema: None,
            tta: false,
            rotate_deg: 15.0,
            shift_px: 0.0,
            scale: 0.0,
            shear_deg: 0.0,
            elastic: None,
            mean: 0.5,
            std: 0.5,
            val_fraction: 0.1,
            split_seed: 42,
            seed: 42,
            train_limit: None,
            test_limit: None,
            test_fraction: 0.0,
            resize: ResizeMode::Stretch,
            strict: false,
            crop_scale: None,
            flip: false,
            jitter: 0.0,
            channel_norm: None,
            init_from: None,
            freeze_backbone: false,
            layer_decay: None,
        }
    }

    /// vitcore's own recipe for digits at every data size on a 2-core CPU: a 6-block ViT with
    /// patch 7 and no class token (the head reads the patches' mean), AdamW at 1e-3 with batch
    /// 64, 36 epochs (from the step budget), rotation and shift, test-time augmentation. See the README for why each value and what it measured.
    pub fn default_preset() -> TrainConfig {
        let mut c = TrainConfig::seed_preset();
        c.preset = "default".into();
        c.model.embed_dim = 64;
        c.model.depth = 6;
        c.model.heads = 4;
        c.model.mlp_dim = 256;
        c.model.patch = 7;
        c.model.dropout = 0.0;
        c.model.attn_dropout = 0.0;
        c.model.init = Init::Timm;
        c.model.identical_blocks = false;
        // No class token; the head reads the mean of the 16 patch tokens (timm's
        // `class_token=False, global_pool='avg'`): +0.4 points on 5,400 rows (BENCHMARKS.md).
        c.model_options.no_class_token = true;
        c.model_options.global_pool = GlobalPool::Avg;
        c.epochs = 15;
        // 36 epochs of MNIST's 844 steps; smaller sets get the cap, 36 epochs, too (see
        // StepBudget). Batch 64 at lr 1e-3 twice the steps of batch 128 at 2e-3 for about the
        // same work: +0.9 points on 5,400 rows, the same on 54,000 (BENCHMARKS.md).
        c.step_budget = Some(StepBudget {
            steps: 30_384,
            max_epochs: 36,
            warmup_steps: 240,
        });
        c.batch_size = 64;
        c.optimizer = OptimizerKind::AdamW;
        c.lr = 1e-3;
        c.weight_decay = 0.05;
        c.schedule = ScheduleKind::WarmupCosine;
        c.warmup_epochs = 1.0;
        c.min_lr = 1e-5;
        c.label_smoothing = 0.1;
        c.clip_norm = Some(1.0);
        c.rotate_deg = 10.0;
        c.shift_px = 2.0;
        // Zoom by a factor in [0.9, 1.1] and shear by up to ±10° too: another writer's digit.
        // MNIST's test digits are by other writers than its training digits, and this is what
        // carries over to them (BENCHMARKS.md, round 6).
        c.scale = 0.1;
        c.shear_deg = 10.0;
        // Nine looks at each test digit (shifts by 1 and 2 pixels): +0.2 to 0.3 points on
        // MNIST, +0.6 to 1.1 on 5,400 rows over a single pass.
        c.tta = true;
        c
    }

    /// `train folder`'s default: the default recipe at 64×64 RGB with patch 8 (64 patches),
    /// photo augmentation (random resized crop of 35–100% of the area, flip, ±10° rotation,
    /// colour jitter 0.2, no shift), and an 80/10/10 stratified split.
    pub fn photos_preset() -> TrainConfig {
        let mut c = TrainConfig::default_preset();
        c.preset = "photos".into();
        // The class-token ViT the photo recipe was measured with.
        c.model_options = VitOptions::default();
        c.step_budget = None;
        c.tta = false; // measured on digits only
        c.model.image_height = 64;
        c.model.image_width = 64;
        c.model.channels = 3;
        c.model.patch = 8;
        c.epochs = 30;
        c.batch_size = 64;
        c.lr = 2e-3; // the digits' rate before their recipe moved to 1e-3; measured on photos
        c.rotate_deg = 10.0;
        c.shift_px = 0.0;
        (c.scale, c.shear_deg) = (0.0, 0.0); // the digits' zoom and shear; photos crop instead
        c.crop_scale = Some([0.35, 1.0]);
        c.flip = true;
        c.jitter = 0.2;
        c.test_fraction = 0.1;
        c
    }

    /// The Keras flowers write-up (QEUR23_VTRANS2) value for value: 200×200 RGB stretched
    /// (`cv2.resize`) and scaled to [0, 1], patch 25 (64 patches), 12 layers, hidden 768, MLP
    /// 3072, 12 heads each with a key width of 768 (`MultiHeadAttention(num_heads=12,
    /// key_dim=768)`), the position embedding on the patches only, dropout 0.1 in the MLP only,
    /// a softmax head, Keras's initialisers and LayerNorm epsilon 1e-3; batch 16, Adam 1e-4
    /// with Keras's epsilon 1e-7 (ε̂) and clipping by value at 1.0, reduce-on-plateau (val
    /// loss, factor 0.1, patience 10, min 1e-10, Keras's rule), early stopping (patience 50),
    /// 20 epochs, an 80/10/10 split, no augmentation. 398,281,733 parameters
    /// (`tests/flowers_preset.rs` derives the count from the Keras layers).
    pub fn flowers_preset() -> TrainConfig {
        let mut c = TrainConfig::seed_preset();
        c.preset = "flowers".into();
        c.model = VitConfig {
            image_height: 200,
            image_width: 200,
            channels: 3,
            patch: 25,
            embed_dim: 768,
            depth: 12,
            heads: 12,
            mlp_dim: 3072,
            num_classes: 5,
            dropout: 0.1,
            attn_dropout: 0.0,
            ln_eps: 1e-3,
            gelu: GeluKind::Erf,
            init: Init::Keras,
            identical_blocks: false,
        };
        c.model_options = VitOptions {
            no_embed_class: true,
            key_dim: Some(768),
            embed_dropout: Some(0.0),
            attn_proj_dropout: Some(0.0),
            softmax_head: true,
            ..VitOptions::default()
        };
        c.epochs = 20;
        c.batch_size = 16;
        c.eval_batch_size = 16;
        c.optimizer = OptimizerKind::Adam;
        c.lr = 1e-4;
        c.eps = 1e-7;
        c.eps_hat = true;
        c.schedule = ScheduleKind::PlateauKeras;
        c.plateau_factor = 0.1;
        c.plateau_patience = 10;
        c.min_lr = 1e-10;
        c.clip_value = Some(1.0);
        c.early_stopping = Some(50);
        c.rotate_deg = 0.0;
        c.mean = 0.0;
        c.std = 1.0;
        c.val_fraction = 0.1;
        c.test_fraction = 0.1;
        c.resize = ResizeMode::Stretch;
        c
    }

    /// The digits' augmentation this run asks for (`None`: none).
    pub fn digit_augment(&self) -> Option<Augment> {
        let a = Augment {
            rotate_deg: self.rotate_deg,
            shift_px: self.shift_px,
            scale: self.scale,
            shear_deg: self.shear_deg,
            elastic: self.elastic.map(|[alpha, sigma]| Elastic { alpha, sigma }),
            fill: 0,
        };
        (a != Augment::default()).then_some(a)
    }

    /// The photo augmentation this run asks for (`None`: none).
    pub fn photo_augment(&self) -> Option<PhotoAugment> {
        let a = PhotoAugment {
            crop_scale: self.crop_scale,
            flip: self.flip,
            rotate_deg: self.rotate_deg,
            shift_px: self.shift_px,
            jitter: self.jitter,
        };
        (!a.is_identity()).then_some(a)
    }

    pub fn preset(name: &str) -> Result<TrainConfig> {
        match name {
            "seed" => Ok(TrainConfig::seed_preset()),
            "default" => Ok(TrainConfig::default_preset()),
            "photos" => Ok(TrainConfig::photos_preset()),
            "flowers" => Ok(TrainConfig::flowers_preset()),
            other => Err(Error::config(format!(
                "unknown preset `{other}` (expected seed, default, photos or flowers)"
            ))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate_with(&self.model_options)?;
        let bad = |what: &str| Err(Error::config(format!("invalid training setting: {what}")));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("--batch-size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("--val-fraction must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("--label-smoothing must be in [0, 1)");
        }
        if self.std <= 0.0 {
            return bad("normalisation std must be positive");
        }
        if self.clip_norm.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return bad("--clip-norm must be a positive number");
        }
        if self.clip_value.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return bad("--clip-value must be a positive number");
        }
        if !(self.rotate_deg.is_finite() && (0.0..=180.0).contains(&self.rotate_deg)) {
            return bad("--rotate must be between 0 and 180 degrees");
        }
        if !(self.shift_px.is_finite() && self.shift_px >= 0.0) {
            return bad("--shift must be a non-negative number of pixels");
        }
        if !(self.scale.is_finite() && (0.0..1.0).contains(&self.scale)) {
            return bad("--scale must be in [0, 1) (the zoom factor is drawn from [1 - S, 1 + S])");
        }
        if !(self.shear_deg.is_finite() && (0.0..90.0).contains(&self.shear_deg)) {
            return bad("--shear must be between 0 and 90 degrees");
        }
        if self
            .elastic
            .is_some_and(|[a, s]| !(a.is_finite() && a >= 0.0 && s.is_finite() && s > 0.0))
        {
            return bad("--elastic ALPHA,SIGMA needs ALPHA >= 0 and SIGMA > 0 pixels");
        }
        if self.ema.is_some_and(|d| !(d.is_finite() && (0.0..1.0).contains(&d))) {
            return bad("--ema must be a decay in [0, 1), such as 0.999");
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad("--warmup-epochs must be a non-negative number");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return Err(Error::config(format!(
                "invalid training setting: --min-lr {:e} must be between 0 and --lr {:e}",
                self.min_lr, self.lr
            )));
        }
        if self.train_limit == Some(0) {
            return bad("--train-limit must be at least 1");
        }
        if self.test_limit == Some(0) {
            return bad("--test-limit must be at least 1");
        }
        if !(0.0..1.0).contains(&self.test_fraction) || self.val_fraction + self.test_fraction >= 1.0 {
            return bad("--test-fraction must be in [0, 1) and leave training images beside --val-fraction");
        }
        if let Some(a) = self.photo_augment() {
            a.validate()?;
        }
        if let Some(n) = &self.channel_norm {
            if n.len() != self.model.channels {
                return Err(Error::config(format!(
                    "invalid training setting: --norm gives {} channel(s) but the model has {}",
                    n.len(),
                    self.model.channels
                )));
            }
        }
        if self.layer_decay.is_some_and(|d| !(d > 0.0 && d <= 1.0)) {
            return bad("--layer-decay must be in (0, 1]");
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    pub fn from_json_file(path: &std::path::Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::data(path, Some(e.line()), format!("not a vitcore config: {e}")))
    }
}
