//! The photo commands: `train folder` (its flags), `predict` on photos (a run trained on class
//! folders, or a bare pretrained checkpoint), and `make-dataset inspection`. The work is in
//! `crate::data::folder`, `crate::train`, `crate::pretrained` and `crate::synth`.

use super::{pick_device, TrainFlags};
use crate::backend::cuda::DeviceChoice;
use crate::data::folder::{self, PhotoShape, ResizeMode};
use crate::data::{Dataset, IMAGENET_NORM};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::nn::Vit;
use crate::synth::inspection::{self, InspectionOptions};
use crate::train::{self, TrainConfig};
use crate::ParamStore;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// `vitcore train folder DIR`.
#[derive(Args, Debug, Clone)]
pub struct FolderArgs {
    /// The training folder: one sub-folder of JPEG/PNG images per class (the class names are the
    /// folder names). With --resume: not needed (the run's own), or its new place if it has moved.
    #[arg(required_unless_present = "resume")]
    pub dir: Option<PathBuf>,
    /// A separate validation folder (same class folders), instead of splitting one off DIR.
    #[arg(long, value_name = "DIR")]
    pub val: Option<PathBuf>,
    /// A separate test folder (same class folders), instead of splitting one off DIR.
    #[arg(long, value_name = "DIR")]
    pub test: Option<PathBuf>,
    #[command(flatten)]
    pub photo: PhotoFlags,
    #[command(flatten)]
    pub flags: TrainFlags,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ResizeArg {
    /// Resize the whole image to N×N, ignoring its aspect ratio (as the Keras flowers setup).
    Stretch,
    /// Scale the short side to N, keep the centre N×N.
    Crop,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FreezeArg {
    /// Train only the head (a linear probe of the pretrained features).
    Backbone,
}

/// The settings only photos have; each overrides the preset's value.
#[derive(Args, Debug, Clone, Default)]
pub struct PhotoFlags {
    /// Side of the model's square input in pixels (images are resized to it).
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    /// Colour channels of the model's input: 3 (RGB) or 1 (gray).
    #[arg(long, value_parser = parse_channels)]
    pub channels: Option<usize>,
    /// How an image of another size becomes N×N: stretch (whole image) or crop (centre).
    #[arg(long, value_enum)]
    pub resize: Option<ResizeArg>,
    /// An unreadable or truncated image is an error (default: skipped, with one line naming it,
    /// and listed in the run folder's skipped.txt).
    #[arg(long)]
    pub strict: bool,
    /// Fraction of each class held out for the test (when no --test folder is given).
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Random resized crop: the crop's share of the image area, `LO,HI` (e.g. 0.35,1), or `none`.
    #[arg(long, value_name = "LO,HI")]
    pub crop_scale: Option<String>,
    /// Random horizontal flip (`--flip false` turns the preset's off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub flip: Option<bool>,
    /// Colour jitter: brightness, contrast and saturation factors in [1-J, 1+J] (0: off).
    #[arg(long, value_name = "J")]
    pub jitter: Option<f32>,
    /// Per-channel normalisation: imagenet (timm's pretrained ViTs; the default with --init
    /// FILE), half (mean 0.5, std 0.5), unit (pixel/255, as Keras's flowers setup), or
    /// `M1,M2,M3/S1,S2,S3`.
    #[arg(long, value_name = "NORM")]
    pub norm: Option<String>,
    /// Freeze part of a pretrained model: `backbone` trains only the head (linear probe).
    #[arg(long, value_enum)]
    pub freeze: Option<FreezeArg>,
    /// Layer-wise learning-rate decay (e.g. 0.75): block i of L learns at lr·d^(L−i), the
    /// embeddings at lr·d^(L+1), the final norm and head at lr (BEiT, timm's layer_decay).
    #[arg(long, value_name = "D")]
    pub layer_decay: Option<f64>,
}

fn parse_channels(s: &str) -> std::result::Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("expected 1 (gray) or 3 (RGB), found `{s}`")),
    }
}

/// Parse `--norm`.
pub fn parse_norm(text: &str, channels: usize) -> Result<Option<Vec<[f32; 2]>>> {
    let per = |m: f32, s: f32| vec![[m, s]; channels];
    match text {
        "imagenet" if channels == 3 => Ok(Some(IMAGENET_NORM.to_vec())),
        "imagenet" => Err(Error::config("--norm imagenet needs 3 channels")),
        "half" => Ok(Some(per(0.5, 0.5))),
        "unit" => Ok(Some(per(0.0, 1.0))),
        _ => {
            let bad = || {
                Error::config(format!(
                    "--norm {text}: expected imagenet, half, unit or {channels} means / {channels} stds (`0.5,0.5,0.5/0.25,0.25,0.25`)"
                ))
            };
            let (m, s) = text.split_once('/').ok_or_else(bad)?;
            let nums =
                |t: &str| -> Result<Vec<f32>> { t.split(',').map(|v| v.trim().parse().map_err(|_| bad())).collect() };
            let (m, s) = (nums(m)?, nums(s)?);
            if m.len() != channels || s.len() != channels {
                return Err(bad());
            }
            Ok(Some(m.into_iter().zip(s).map(|(m, s)| [m, s]).collect()))
        }
    }
}

impl PhotoFlags {
    /// `c` with every given photo flag applied.
    pub fn apply(&self, mut c: TrainConfig) -> Result<TrainConfig> {
        if let Some(n) = self.image_size {
            c.model.image_height = n;
            c.model.image_width = n;
        }
        if let Some(ch) = self.channels {
            if ch != c.model.channels {
                c.model.channels = ch;
                // The preset's per-channel values were for another channel count.
                c.channel_norm = c.channel_norm.as_ref().map(|n| vec![n[0]; ch]);
            }
        }
        if let Some(r) = self.resize {
            c.resize = match r {
                ResizeArg::Stretch => ResizeMode::Stretch,
                ResizeArg::Crop => ResizeMode::Crop,
            };
        }
        c.strict |= self.strict;
        if let Some(f) = self.test_fraction {
            c.test_fraction = f;
        }
        if let Some(text) = &self.crop_scale {
            c.crop_scale = match text.as_str() {
                "none" => None,
                _ => {
                    let v: Vec<f32> = text.split(',').filter_map(|v| v.trim().parse().ok()).collect();
                    match v[..] {
                        [lo, hi] => Some([lo, hi]),
                        _ => {
                            return Err(Error::config(format!(
                                "--crop-scale {text}: expected LO,HI (e.g. 0.35,1) or none"
                            )))
                        }
                    }
                }
            };
        }
        if let Some(f) = self.flip {
            c.flip = f;
        }
        if let Some(j) = self.jitter {
            c.jitter = j;
        }
        if let Some(n) = &self.norm {
            c.channel_norm = parse_norm(n, c.model.channels)?;
        }
        if self.freeze.is_some() {
            c.freeze_backbone = true;
        }
        if self.layer_decay.is_some() {
            c.layer_decay = self.layer_decay;
        }
        Ok(c)
    }
}

/// The shape photos are read at for a model of `cfg`.
pub fn photo_shape(cfg: &TrainConfig) -> PhotoShape {
    PhotoShape {
        size: cfg.model.image_height,
        channels: cfg.model.channels,
        resize: cfg.resize,
    }
}

/// `vitcore make-dataset`.
#[derive(Subcommand, Debug)]
pub enum MakeDatasetWhat {
    /// A synthetic visual-inspection set: photos of a machined part (a flanged washer) on a plain
    /// bench, in class folders dent / ok / scratch / stain, with position, rotation, size, metal,
    /// lighting and noise varied, and a few deliberately mislabeled images listed in
    /// DIR/mislabeled.csv. Half JPEG, half PNG. Train on it with `vitcore train folder DIR`.
    Inspection {
        /// The folder to create (must not exist, or be empty).
        dir: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = 150)]
        per_class: usize,
        /// Side of each image in pixels.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Images put in a wrong class folder on purpose (listed in mislabeled.csv).
        #[arg(long, default_value_t = 12)]
        mislabeled: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

pub fn make_dataset(what: MakeDatasetWhat) -> Result<()> {
    match what {
        MakeDatasetWhat::Inspection {
            dir,
            per_class,
            size,
            mislabeled,
            seed,
        } => {
            let r = inspection::render_set(
                &dir,
                &InspectionOptions {
                    per_class,
                    size,
                    mislabeled,
                    seed,
                },
            )?;
            outln!(
                "wrote {} images ({} classes: {}) to {}, {} of them in a wrong class folder on purpose: {}",
                r.files,
                inspection::CLASSES.len(),
                inspection::CLASSES.join(", "),
                dir.display(),
                r.mislabeled.len(),
                dir.join(inspection::MISLABELED_FILE).display()
            );
            Ok(())
        }
    }
}

/// `predict` for photos: `top_k` classes of each image of `input` (a file, or a folder read
/// recursively), with `classes` naming the model's outputs.
pub struct PhotoPredict<'a> {
    pub cfg: &'a TrainConfig,
    pub vit: &'a Vit,
    pub store: ParamStore,
    pub classes: Vec<String>,
    /// Average over shifted copies (`--tta`, [`train::tta`]).
    pub tta: bool,
}

impl<'a> PhotoPredict<'a> {
    /// The model with its parameters moved to `--device`'s choice.
    pub fn on_device(
        cfg: &'a TrainConfig,
        vit: &'a Vit,
        mut store: ParamStore,
        classes: Vec<String>,
        device: DeviceChoice,
    ) -> Result<PhotoPredict<'a>> {
        store.to_device(pick_device(device)?)?;
        Ok(PhotoPredict {
            cfg,
            vit,
            store,
            classes,
            tta: false,
        })
    }

    pub fn run(&self, input: &Path, top_k: usize, out: Option<&Path>) -> Result<()> {
        let k = top_k.clamp(1, self.classes.len());
        let shape = photo_shape(self.cfg);
        if !input.is_dir() {
            let px = folder::decode::load_photo(input, shape)?;
            let probs = self.probabilities(px, 1)?;
            outln!("{}:", input.display());
            for (c, p) in top(&probs[0], k) {
                outln!("  {:<20} {:6.2}%", self.classes[c], 100.0 * p);
            }
            return Ok(());
        }
        let out = out.map_or_else(|| PathBuf::from("predictions.csv"), Path::to_path_buf);
        fsutil::refuse_overwriting_inputs(&[("--out", &out)], &[input])?;
        train::refuse_run_inside(&out, &[input.to_path_buf()])?;
        let mut files = Vec::new();
        folder::image_files(input, &mut files)?;
        if files.is_empty() {
            return Err(Error::data(input, None, "holds no JPEG or PNG image to predict"));
        }
        let decoded: Vec<Result<Vec<u8>>> = {
            use rayon::prelude::*;
            files.par_iter().map(|f| folder::decode::load_photo(f, shape)).collect()
        };
        let (mut pixels, mut names) = (Vec::new(), Vec::new());
        for (f, r) in files.iter().zip(decoded) {
            match r {
                Ok(px) => {
                    pixels.extend(px);
                    names.push(folder::relative_name(input, f));
                }
                Err(e) => errln!("skipped {e}"),
            }
        }
        let probs = self.probabilities(pixels, names.len())?;
        let mut text = String::from("file,class,probability");
        for r in 2..=k {
            text += &format!(",class_{r},probability_{r}");
        }
        text.push('\n');
        for (name, p) in names.iter().zip(&probs) {
            text += &csv_field(name);
            for (c, p) in top(p, k) {
                text += &format!(",{},{p:.6}", csv_field(&self.classes[c]));
            }
            text.push('\n');
        }
        fsutil::write_atomic(&out, text.as_bytes())?;
        outln!(
            "wrote the top {k} classes of {} images to {}",
            names.len(),
            out.display()
        );
        Ok(())
    }

    fn probabilities(&self, pixels: Vec<u8>, n: usize) -> Result<Vec<Vec<f32>>> {
        let m = &self.cfg.model;
        let ds = Dataset::new(pixels, None, [m.channels, m.image_height, m.image_width], m.num_classes)?;
        debug_assert_eq!(ds.len(), n);
        Ok(train::tta::evaluate_maybe_tta(self.vit, &self.store, &ds, self.cfg, true, self.tta)?.probabilities)
    }
}

/// Quote a CSV field when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    match s.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

/// The `k` largest probabilities, largest first: `(class, probability)`.
pub fn top(p: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|c| (c, p[c])).collect()
}

/// `predict RUN` for a run trained on class folders.
pub fn predict_run(
    run: &Path,
    classes: Vec<String>,
    input: &Path,
    top_k: usize,
    out: Option<&Path>,
    checkpoint: &str,
    device: DeviceChoice,
    tta: Option<bool>,
) -> Result<()> {
    let (cfg, vit, store) = train::load_run(run, checkpoint)?;
    let tta = tta.unwrap_or(cfg.tta);
    if classes.len() != cfg.model.num_classes {
        return Err(Error::data(
            run.join(train::CLASSES_FILE),
            None,
            format!(
                "names {} classes but the model has {}",
                classes.len(),
                cfg.model.num_classes
            ),
        ));
    }
    let mut p = PhotoPredict::on_device(&cfg, &vit, store, classes, device)?;
    p.tta = tta;
    p.run(input, top_k, out)
}

/// A new `train folder` run's configuration: the preset (`photos` unless another is named), the
/// command line's flags, and the class count of DIR.
pub fn new_config(f: &FolderArgs, dir: Option<&Path>) -> Result<TrainConfig> {
    use super::PresetArg;
    let base = match f.flags.preset {
        None | Some(PresetArg::Default) | Some(PresetArg::Photos) => TrainConfig::photos_preset(),
        Some(PresetArg::Seed) => TrainConfig::seed_preset(),
        Some(PresetArg::Flowers) => TrainConfig::flowers_preset(),
    };
    let base = match &f.flags.init {
        Some(super::InitSpec::Checkpoint(p)) => fine_tune_config(base, p, f.flags.heads, f.photo.image_size)?,
        _ => base,
    };
    let mut c = f.photo.apply(f.flags.apply(base))?;
    if let Some(dir) = dir {
        c.model.num_classes = folder::scan(dir, None)?.classes.len();
    }
    Ok(c)
}

/// The heads of a pretrained ViT when not given: timm's ViTs all use heads of 64 features.
fn default_heads(ckpt: &Path, d: usize) -> Result<usize> {
    match d % 64 {
        0 => Ok(d / 64),
        _ => Err(Error::config(format!(
            "{}: give --heads (its width {d} is not a multiple of timm's 64-wide heads)",
            ckpt.display()
        ))),
    }
}

/// Fine-tuning `ckpt`: the model is the checkpoint's (at `image_size` if given), the rest of
/// `base` adapted to fine-tuning: ImageNet normalisation, AdamW at 1e-4 (weight decay 0.05,
/// one warmup epoch then cosine), label smoothing 0.1, gradient clipping at norm 1, 10 epochs,
/// no dropout. Every flag still overrides these.
pub fn fine_tune_config(
    mut base: TrainConfig,
    ckpt: &Path,
    heads: Option<usize>,
    image_size: Option<usize>,
) -> Result<TrainConfig> {
    let pre = crate::pretrained::Pretrained::read(ckpt)?;
    let d = pre.tensors["patch_embed.proj.weight"].shape()[0];
    let heads = match heads {
        Some(h) => h,
        None => default_heads(ckpt, d)?,
    };
    let (model, opts) = pre.vit_config(ckpt, heads, image_size, Some(base.model.num_classes))?;
    base.channel_norm = (model.channels == 3).then(|| IMAGENET_NORM.to_vec());
    base.model = model;
    base.model_options = opts;
    base.optimizer = crate::train::OptimizerKind::AdamW;
    base.lr = 1e-4;
    base.min_lr = 1e-6;
    base.weight_decay = 0.05;
    base.schedule = crate::train::ScheduleKind::WarmupCosine;
    base.warmup_epochs = 1.0;
    base.label_smoothing = 0.1;
    base.clip_norm = Some(1.0);
    base.epochs = 10;
    Ok(base)
}

/// `predict CHECKPOINT.safetensors --heads N`: a pretrained model as it is, at its own input
/// size, ImageNet normalisation for 3 channels; the classes are named by their index.
pub fn predict_checkpoint(
    ckpt: &Path,
    heads: Option<usize>,
    input: &Path,
    top_k: usize,
    out: Option<&Path>,
    device: DeviceChoice,
    tta: bool,
) -> Result<()> {
    let pre = crate::pretrained::Pretrained::read(ckpt)?;
    let heads = heads.ok_or_else(|| {
        Error::config(format!(
            "{}: give --heads N (a checkpoint does not record its head count; timm's ViT-Ti/S/B have 3/6/12)",
            ckpt.display()
        ))
    })?;
    let (model, opts) = pre.vit_config(ckpt, heads, None, None)?;
    let mut cfg = TrainConfig::default_preset();
    cfg.preset = "pretrained".into();
    cfg.channel_norm = (model.channels == 3).then(|| IMAGENET_NORM.to_vec());
    cfg.resize = ResizeMode::Crop;
    cfg.eval_batch_size = 32;
    cfg.model = model;
    cfg.model_options = opts;
    let (vit, mut store) = train::build_model(&cfg)?;
    for note in pre.load_into(ckpt, &vit, &mut store)? {
        errln!("{}: {note}", ckpt.display());
    }
    let classes = (0..cfg.model.num_classes).map(|c| c.to_string()).collect();
    let mut p = PhotoPredict::on_device(&cfg, &vit, store, classes, device)?;
    p.tta = tta;
    p.run(input, top_k, out)
}
