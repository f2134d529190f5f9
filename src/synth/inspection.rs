//! A synthetic visual-inspection set: photos of one kind of machined part, a flanged washer
//! (an outer ring, a centre bore and four bolt holes), on a plain bench, in one folder per
//! class (the layout `vitcore train folder` reads):
//!
//! - `ok`: a clean part;
//! - `scratch`: a thin straight line across the ring, lighter or darker than the metal;
//! - `dent`: a small round depression, dark on the side away from the light and bright on the
//!   side facing it;
//! - `stain`: an irregular brownish blot (a few overlapping discs) of partial opacity.
//!
//! Each photo varies what a camera on a line varies: the part's position (±7% of the frame),
//! its rotation (the bolt holes), its size (±8%), the steel's tint (±10 levels per channel),
//! the bench's shade, the light's direction and brightness (±12%, and a linear gradient over
//! the part and the bench), and sensor noise (Gaussian, σ ≈ 3 levels). Defects are placed at
//! random on the ring. Every shape is drawn with anti-aliased edges (coverage from the signed
//! distance), so nothing depends on the pixel grid.
//!
//! A few images are deliberately put in the wrong class folder (`mislabeled`); they are listed
//! in `DIR/mislabeled.csv` (`file,folder_class,true_class`), so a label audit
//! (`vitcore audit RUN`) can be checked against the truth. Images alternate between JPEG
//! (quality 92) and PNG, as a real collection mixes them. The same seed renders the same set.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ::image::codecs::jpeg::JpegEncoder;
use ::image::{ImageFormat, RgbImage};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::rng::{derive_seed, Rng};

/// The classes, in folder order.
pub const CLASSES: [&str; 4] = ["dent", "ok", "scratch", "stain"];

/// The side file listing the deliberately mislabeled images.
pub const MISLABELED_FILE: &str = "mislabeled.csv";

/// What to render.
#[derive(Clone, Debug)]
pub struct InspectionOptions {
    /// Images per class (before the mislabeled ones are moved).
    pub per_class: usize,
    /// Side of each square image in pixels.
    pub size: usize,
    /// How many images go to a wrong class folder.
    pub mislabeled: usize,
    pub seed: u64,
}

impl Default for InspectionOptions {
    fn default() -> Self {
        InspectionOptions {
            per_class: 150,
            size: 128,
            mislabeled: 12,
            seed: 42,
        }
    }
}

/// What [`render_set`] wrote.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub files: usize,
    /// `(file relative to DIR, folder class, true class)`.
    pub mislabeled: Vec<(String, String, String)>,
}

/// Render the set into `dir`, which must not exist or be empty (nothing is ever overwritten).
pub fn render_set(dir: &Path, opts: &InspectionOptions) -> Result<Rendered> {
    if opts.per_class == 0 || opts.size < 16 {
        return Err(Error::config(format!(
            "make-dataset inspection: --per-class must be at least 1 and --size at least 16, found {} and {}",
            opts.per_class, opts.size
        )));
    }
    let total = opts.per_class * CLASSES.len();
    if opts.mislabeled > total / 4 {
        return Err(Error::config(format!(
            "make-dataset inspection: --mislabeled {} is more than a quarter of the {total} images",
            opts.mislabeled
        )));
    }
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        if entries.next().is_some() {
            return Err(Error::config(format!(
                "{} is not empty: make-dataset writes only into a new or empty folder",
                dir.display()
            )));
        }
    }
    // Which images go to a wrong folder: a seeded choice, each moved to another class at random.
    let mut rng = Rng::new(derive_seed(opts.seed, 0x6d69_736c));
    let mut order: Vec<usize> = (0..total).collect();
    rng.shuffle(&mut order);
    let mut folder_of: Vec<usize> = (0..total).map(|i| i / opts.per_class).collect();
    for &i in &order[..opts.mislabeled] {
        let wrong = (folder_of[i] + 1 + rng.below(CLASSES.len() - 1)) % CLASSES.len();
        folder_of[i] = wrong;
    }
    for c in CLASSES {
        std::fs::create_dir_all(dir.join(c)).map_err(|e| Error::io(dir.join(c), e))?;
    }
    let written: Vec<Result<(String, usize, usize)>> = (0..total)
        .into_par_iter()
        .map(|i| {
            let class = i / opts.per_class;
            let img = render(CLASSES[class], opts.size, derive_seed(opts.seed, i as u64));
            let ext = if i % 2 == 0 { "jpg" } else { "png" };
            let name = format!("{}/part_{i:05}.{ext}", CLASSES[folder_of[i]]);
            write_image(&dir.join(&name), &img)?;
            Ok((name, folder_of[i], class))
        })
        .collect();
    let mut mislabeled = Vec::new();
    for w in written {
        let (name, folder, truth) = w?;
        if folder != truth {
            mislabeled.push((name, CLASSES[folder].to_string(), CLASSES[truth].to_string()));
        }
    }
    let mut csv = String::from("file,folder_class,true_class\n");
    for (f, a, b) in &mislabeled {
        csv += &format!("{f},{a},{b}\n");
    }
    fsutil::write_atomic(&dir.join(MISLABELED_FILE), csv.as_bytes())?;
    Ok(Rendered {
        files: total,
        mislabeled,
    })
}

fn write_image(path: &PathBuf, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    let enc = match path.extension().and_then(|e| e.to_str()) {
        Some("jpg") => img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 92)),
        _ => img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png),
    };
    enc.map_err(|e| Error::data(path, None, format!("cannot encode: {e}")))?;
    fsutil::write_atomic(path, &bytes)
}

/// Coverage of a shape at signed distance `d` (negative inside), anti-aliased over one pixel.
fn cover(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

/// Render one photo of class `class` (one of [`CLASSES`]).
pub fn render(class: &str, size: usize, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let s = size as f32;
    let u = |rng: &mut Rng, lo: f32, hi: f32| rng.uniform_in(lo, hi);
    // Scene.
    // A line photographs one kind of part under controlled light: the nuisance varies, but
    // less than the defects do.
    let bench_gray = u(&mut rng, 165.0, 205.0);
    let bench = [0, 1, 2].map(|_| bench_gray + u(&mut rng, -6.0, 6.0));
    let metal = [140.0f32, 148.0, 158.0].map(|m| m + u(&mut rng, -10.0, 10.0)); // steel
    let light_angle = u(&mut rng, 0.0, std::f32::consts::TAU);
    let (ly, lx) = light_angle.sin_cos();
    let brightness = u(&mut rng, 0.88, 1.12);
    let (cx, cy) = (
        s * (0.5 + u(&mut rng, -0.07, 0.07)),
        s * (0.5 + u(&mut rng, -0.07, 0.07)),
    );
    let r_out = s * 0.4 * u(&mut rng, 0.92, 1.08);
    let r_bore = r_out * 0.36;
    let r_bolt = r_out * 0.1;
    let bolt_angle = u(&mut rng, 0.0, std::f32::consts::FRAC_PI_2);
    let bolts: Vec<(f32, f32)> = (0..4)
        .map(|k| {
            let a = bolt_angle + k as f32 * std::f32::consts::FRAC_PI_2;
            (cx + a.cos() * r_out * 0.68, cy + a.sin() * r_out * 0.68)
        })
        .collect();
    // A point on the ring (between the bore and the edge, away from the bolt circle's holes).
    let ring_point = |rng: &mut Rng| {
        let a = rng.uniform_in(0.0, std::f32::consts::TAU);
        let r = r_out * rng.uniform_in(0.45, 0.85);
        (cx + a.cos() * r, cy + a.sin() * r)
    };
    // Drawn before the defect, so the same seed gives the same scene in every class.
    let noise_seed = rng.next_u64();
    enum Defect {
        None,
        Scratch {
            p: (f32, f32),
            dir: (f32, f32),
            len: f32,
            width: f32,
            tone: f32,
        },
        Dent {
            p: (f32, f32),
            r: f32,
        },
        Stain {
            discs: Vec<(f32, f32, f32)>,
            colour: [f32; 3],
            alpha: f32,
        },
    }
    let defect = match class {
        "scratch" => {
            let p = ring_point(&mut rng);
            let a = u(&mut rng, 0.0, std::f32::consts::PI);
            Defect::Scratch {
                p,
                dir: (a.cos(), a.sin()),
                len: r_out * u(&mut rng, 0.9, 1.4),
                width: (s / 40.0).max(1.0) * u(&mut rng, 0.8, 1.3),
                tone: if rng.uniform() < 0.5 { -90.0 } else { 75.0 },
            }
        }
        "dent" => Defect::Dent {
            p: ring_point(&mut rng),
            r: r_out * u(&mut rng, 0.2, 0.27),
        },
        "stain" => {
            let (px, py) = ring_point(&mut rng);
            let base = r_out * u(&mut rng, 0.17, 0.24);
            let discs = (0..4)
                .map(|_| {
                    (
                        px + u(&mut rng, -base, base),
                        py + u(&mut rng, -base, base),
                        base * u(&mut rng, 0.6, 1.1),
                    )
                })
                .collect();
            Defect::Stain {
                discs,
                colour: [
                    u(&mut rng, 70.0, 110.0),
                    u(&mut rng, 45.0, 70.0),
                    u(&mut rng, 20.0, 40.0),
                ],
                alpha: u(&mut rng, 0.55, 0.8),
            }
        }
        _ => Defect::None,
    };
    let mut img = RgbImage::new(size as u32, size as u32);
    let mut noise = Rng::new(noise_seed);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = (fx - cx, fy - cy);
            let r = (dx * dx + dy * dy).sqrt();
            // Light: a gradient along the light direction over the whole frame.
            let shade = brightness * (1.0 + 0.18 * ((fx - s / 2.0) * lx + (fy - s / 2.0) * ly) / s);
            let mut px = bench.map(|b| b * shade);
            // The part: inside the outer edge, outside the bore and bolt holes; the metal is
            // shaded along the light (brighter on its lit side) and darker at its rim.
            let hole = bolts
                .iter()
                .map(|&(bx, by)| ((fx - bx).powi(2) + (fy - by).powi(2)).sqrt() - r_bolt)
                .fold(f32::INFINITY, f32::min);
            let part = cover(r - r_out).min(cover(r_bore - r)).min(cover(-hole));
            if part > 0.0 {
                let lit = 1.0 + 0.35 * (dx * lx + dy * ly) / r_out;
                let rim = 1.0 - 0.2 * (r / r_out).powi(6);
                let mut m = metal.map(|c| c * brightness * lit * rim);
                match &defect {
                    Defect::Scratch {
                        p,
                        dir,
                        len,
                        width,
                        tone,
                    } => {
                        let (qx, qy) = (fx - p.0, fy - p.1);
                        let along = qx * dir.0 + qy * dir.1;
                        let across = (qx * -dir.1 + qy * dir.0).abs();
                        let d = (across - width / 2.0).max(along.abs() - len / 2.0);
                        let t = cover(d);
                        m = m.map(|c| c + tone * t);
                    }
                    Defect::Dent { p, r: rd } => {
                        let (qx, qy) = (fx - p.0, fy - p.1);
                        let q = (qx * qx + qy * qy).sqrt();
                        let t = cover(q - rd);
                        if t > 0.0 {
                            // Facing the light → bright, away → dark (a bowl lit from one side).
                            let facing = -(qx * lx + qy * ly) / rd;
                            m = m.map(|c| c + t * (70.0 * facing - 45.0));
                        }
                    }
                    Defect::Stain { discs, colour, alpha } => {
                        let d = discs
                            .iter()
                            .map(|&(sx, sy, sr)| ((fx - sx).powi(2) + (fy - sy).powi(2)).sqrt() - sr)
                            .fold(f32::INFINITY, f32::min);
                        m = mix(m, *colour, alpha * cover(d));
                    }
                    Defect::None => {}
                }
                px = mix(px, m, part);
            }
            let n = 3.0 * noise.normal();
            let v = px.map(|c| (c + n).round().clamp(0.0, 255.0) as u8);
            img.put_pixel(x as u32, y as u32, ::image::Rgb(v));
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_differs_from_ok_on_the_part_only() {
        // Same seed: same scene; only the defect differs.
        let ok = render("ok", 64, 5);
        for c in ["scratch", "dent", "stain"] {
            let d = render(c, 64, 5);
            let changed = ok.pixels().zip(d.pixels()).filter(|(a, b)| a != b).count();
            assert!(changed > 10 && changed < 64 * 64 / 4, "{c}: {changed} pixels differ");
        }
        assert_eq!(render("stain", 32, 9), render("stain", 32, 9));
    }
}
