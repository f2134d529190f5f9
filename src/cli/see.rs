//! The commands that show what is inside a model and its data: `plot`, `summary`, `show
//! patches`, `attention` and `audit` (the work is in `crate::train::pictures`, `crate::nn::summary`
//! and `crate::inspect`).

use super::{pick_device, run_train, PresetArg};
use crate::backend::cuda::DeviceChoice;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::{attention, audit, input, patches};
use crate::train::{self, pictures, TrainConfig};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The run folder (runs/NAME).
    pub run: PathBuf,
    /// Where the run's data is now, if it has moved (MNIST folder or training CSV).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Device for the evaluation: auto, cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// A run folder: summarise its model (from config.json). Without it, a preset's.
    #[arg(conflicts_with = "preset")]
    pub run: Option<PathBuf>,
    /// The preset to summarise [default: default].
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
}

#[derive(Subcommand, Debug)]
pub enum ShowWhat {
    /// An image with its patch grid drawn, and the patch sequence as a ViT receives it (the
    /// original ViT's class token first, then the patches in row-major order).
    Patches {
        /// A PNG image, or a Kaggle-style CSV (with --index).
        image: PathBuf,
        /// Patch size in pixels (must divide the image's sides).
        #[arg(long, default_value_t = 7)]
        patch: usize,
        /// Row of the CSV to show (0 = the first image).
        #[arg(long)]
        index: Option<usize>,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// The run folder (runs/NAME).
    pub run: PathBuf,
    /// A PNG of one digit at the model's size (read as `predict` reads it), or a Kaggle-style
    /// CSV with --index.
    #[arg(long)]
    pub input: PathBuf,
    /// Row of the CSV (0 = the first image).
    #[arg(long)]
    pub index: Option<usize>,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Which checkpoint: best or last.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The run folder to audit (its training margins). Or, instead, train one first with --data
    /// (MNIST) or --train (CSV) and the training flags.
    #[arg(conflicts_with_all = ["data", "train"])]
    pub run: Option<PathBuf>,
    /// Train on the MNIST folder DIR first (with the training flags), then audit that run.
    #[arg(long, value_name = "DIR", conflicts_with = "train")]
    pub data: Option<PathBuf>,
    /// Train on the Kaggle-style training CSV first, then audit that run.
    #[arg(long, value_name = "CSV")]
    pub train: Option<PathBuf>,
    /// Images in the contact sheet (audit.png).
    #[arg(long, default_value_t = 40)]
    pub top: usize,
    #[command(flatten)]
    pub flags: super::TrainFlags,
}

/// `vitcore plot RUN`.
pub fn plot(a: PlotArgs) -> Result<()> {
    let device = pick_device(a.device)?;
    for p in pictures::redraw(&a.run, a.data.as_deref(), device)? {
        outln!("wrote {}", p.display());
    }
    Ok(())
}

/// `vitcore summary`.
pub fn summary(a: SummaryArgs) -> Result<()> {
    let cfg = match (&a.run, a.preset) {
        (Some(run), _) => TrainConfig::from_json_file(&run.join("config.json"))?,
        (None, p) => TrainConfig::preset(p.unwrap_or(PresetArg::Default).name())?,
    };
    let (vit, store) = train::build_model(&cfg)?;
    let what = a
        .run
        .as_ref()
        .map_or(format!("preset {}", cfg.preset), |r| r.display().to_string());
    outln!("ViT of {what}\n");
    outln!("{}", crate::nn::summary::table(&vit, &store));
    Ok(())
}

/// Refuse `out` when it is one of `inputs` (nothing is written then).
fn guard(out: &Path, inputs: &[&Path]) -> Result<()> {
    fsutil::refuse_overwriting_inputs(&[("--out", out)], inputs)
}

/// `vitcore show patches`.
pub fn show(what: ShowWhat) -> Result<()> {
    let ShowWhat::Patches {
        image,
        patch,
        index,
        out,
    } = what;
    guard(&out, &[&image])?;
    let img = input::load_any(&image, index)?;
    patches::picture(&img, patch)?.save(&out)?;
    outln!("wrote {}", out.display());
    Ok(())
}

/// `vitcore attention RUN --input IMAGE --out FILE.png`.
pub fn attention(a: AttentionArgs) -> Result<()> {
    let ckpt = a.run.join(format!("{}.safetensors", a.checkpoint));
    guard(&a.out, &[&a.input, &a.run.join("config.json"), &ckpt])?;
    let (cfg, vit, store) = train::load_run(&a.run, &a.checkpoint)?;
    let m = &cfg.model;
    let img = input::load_for_model(&a.input, a.index, [m.channels, m.image_height, m.image_width])?;
    if !img.notes.is_empty() {
        errln!("{}: {}", a.input.display(), img.notes.join("; "));
    }
    let maps = attention::class_attention(&vit, &store, &img, cfg.mean, cfg.std)?;
    let name = format!("{}, {}.safetensors", fsutil::file_name(&a.run), a.checkpoint);
    attention::picture(&img, &maps, m.depth, &name)?.save(&a.out)?;
    let best = (0..maps.probabilities.len())
        .max_by(|&i, &j| maps.probabilities[i].total_cmp(&maps.probabilities[j]))
        .unwrap_or(0);
    outln!(
        "{}: class {best} ({:.1}%); wrote {}",
        img.name,
        100.0 * maps.probabilities[best],
        a.out.display()
    );
    Ok(())
}

/// `vitcore audit RUN` or `vitcore audit --data DIR|--train CSV [training flags]`.
pub fn audit(a: AuditArgs) -> Result<()> {
    let run = match (&a.run, &a.data, &a.train) {
        (Some(run), _, _) => run.clone(),
        (None, None, None) => return Err(Error::config(
            "audit what? give a run folder (vitcore audit runs/NAME), or --data DIR / --train CSV to train one first",
        )),
        (None, data, train) => {
            if a.flags.resume.is_some() {
                return Err(Error::config(
                    "audit --data/--train trains a new run; to continue one, use `train --resume`, then `audit RUN`",
                ));
            }
            let (kind, path) = match data {
                Some(d) => ("mnist", Some(d.clone())),
                None => ("csv", train.clone()),
            };
            let mut flags = a.flags.clone();
            let out = flags
                .out
                .clone()
                .unwrap_or_else(|| super::fresh_run_dir(&PathBuf::from(format!("runs/audit-{kind}"))));
            flags.out = Some(out.clone());
            run_train(kind, path, &flags)?;
            out
        }
    };
    let audit = audit::audit_run(&run, None)?;
    let outputs = audit::AUDIT_FILES.map(|f| run.join(f));
    let outs: Vec<(&str, &Path)> = outputs.iter().map(|p| ("audit", p.as_path())).collect();
    let saved = train::DataSource::read_json(&run.join("data.json"))?;
    let inputs = saved.input_files()?;
    fsutil::refuse_overwriting_inputs(&outs, &inputs.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let name = run
        .file_name()
        .map_or(run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let written = audit.write(&run, &name, a.top)?;
    let negative = audit.suspects.iter().filter(|s| s.aum < 0.0).count();
    outln!(
        "audited {} training images ({} of the validation split are not trained on, so not audited); \
         {negative} have a negative area under the margin (the model mostly preferred another class)",
        audit.suspects.len(),
        audit.held_out
    );
    outln!("most likely label errors (rank, image index, given -> suggested, AUM):");
    for s in audit.suspects.iter().take(10) {
        outln!(
            "  {:>3}  {:>6}  {} -> {}  {:.3}",
            s.rank,
            s.index,
            s.given,
            s.suggested,
            s.aum
        );
    }
    for p in written {
        outln!("wrote {}", p.display());
    }
    Ok(())
}
