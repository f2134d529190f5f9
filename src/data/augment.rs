//! Data augmentation: a random rotation (and optional shift) per image, nearest-neighbour sampled.
//!
//! The original MNIST ViT setup used torchvision's `RandomRotation(15)`: an angle drawn uniformly
//! from `[-15°, 15°]`, rotation about the image centre, `NEAREST` interpolation and fill 0. We use
//! the same geometry as PIL's `Image.rotate`, which that transform calls:
//!
//! - **Coordinates**: pixel `(x, y)` is column `x`, row `y` (y points down); its centre is at
//!   `(x, y)`. The rotation centre is the centre of the image, `c = ((W-1)/2, (H-1)/2)` — for
//!   28x28 that is `(13.5, 13.5)`, the corner shared by the four middle pixels.
//! - **Direction**: a positive angle turns the picture counter-clockwise as displayed.
//! - **Inverse mapping**: we loop over *output* pixels and ask where each one comes from, so every
//!   output pixel gets exactly one value (a forward mapping would leave holes). With `θ` the angle
//!   and `t` the shift, output pixel `o` reads source point
//!   `s = R(θ)·(o - c - t) + c`, where `R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]`
//!   (`s_x = cos θ·d_x - sin θ·d_y + c_x`, `s_y = sin θ·d_x + cos θ·d_y + c_y`, `d = o - c - t`).
//! - **Nearest neighbour**: the source pixel is `(floor(s_x + 0.5), floor(s_y + 0.5))`; if it falls
//!   outside the image the output is the fill value (0 = background), as PIL does.
//!
//! Checked against Pillow 13 on 2000 MNIST digits with random angles in ±15° and shifts in ±2:
//! identical except 32 of 1.57 M pixels (0.002%). Those are near-ties: Pillow's nearest-neighbour
//! affine path uses 16.16 fixed-point coordinates (an error up to ~1e-5 px), we use exact f64
//! math. `tests/data_mnist.rs` pins two Pillow outputs of a real digit byte for byte.
//!
//! The optional shift is torchvision `RandomAffine(translate=...)`-style: an integer number of
//! pixels per axis, `round(uniform(-shift_px, shift_px))`, moving content right/down when
//! positive. Rotation and shift are composed into one affine map and sampled once (no double
//! resampling).
//!
//! **Scale and shear** (`scale`, `shear_deg`; torchvision `RandomAffine(scale=, shear=)`-style,
//! drawn after the angle and shifts, so that a setting without them draws exactly as before):
//! the forward map is `o = c + t + R(θ)·Sh(φ)·(k·(p - c))` with zoom factor `k` uniform in
//! `[1 - scale, 1 + scale]` and `Sh(φ) = [[1, tan φ], [0, 1]]` a shear along x; the inverse the
//! warp uses is `s = c + Sh(φ)⁻¹·R(-θ)·(o - c - t) / k`, `Sh(φ)⁻¹ = [[1, -tan φ], [0, 1]]`.
//!
//! **Elastic distortion** (Simard, Steinkraus & Platt, "Best Practices for Convolutional Neural
//! Networks Applied to Visual Document Analysis", ICDAR 2003, §2): each pixel gets a random
//! displacement `(Δx, Δy)`, both uniform in `[-1, 1]`, the two fields are smoothed by a Gaussian
//! of standard deviation `σ` pixels and multiplied by `α` pixels; the output pixel `o` then reads
//! the source at `s(o) + α·(G_σ * Δ)(o)`. A small `σ` gives random jitter, a large one nearly a
//! translation; the paper's `σ = 4`, `α = 34` on 29×29 digits is "elastic" in between. As in the
//! paper, these sub-pixel sources are read **bilinearly** (the four nearest pixels weighted by
//! distance, outside pixels counting as the fill, the result rounded to the nearest byte);
//! without elastic distortion the warp stays nearest-neighbour.
//!
//! Reproducibility: each image's random parameters come from its own generator seeded by
//! `(seed, epoch, index in the dataset)` ([`image_seed`]), so the result does not depend on batch
//! order, batch size or thread scheduling.

use crate::error::{Error, Result};
use crate::rng::{derive_seed, Rng};

/// Stream tag separating augmentation randomness from the loader's shuffling.
const AUGMENT_STREAM: u64 = 0x6175_676d_656e_7421; // "augment!"

/// Random augmentation settings. `Augment::default()` is the identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// Maximum rotation in degrees: the angle is uniform in `[-rotate_deg, rotate_deg]`.
    pub rotate_deg: f32,
    /// Maximum translation in pixels per axis (rounded to whole pixels); 0 disables it.
    pub shift_px: f32,
    /// Maximum relative zoom: the factor is uniform in `[1 - scale, 1 + scale]`; 0 disables it.
    pub scale: f32,
    /// Maximum shear along x in degrees, uniform in `[-shear_deg, shear_deg]`; 0 disables it.
    pub shear_deg: f32,
    /// Elastic distortion, or `None`.
    pub elastic: Option<Elastic>,
    /// Value for output pixels whose source falls outside the image (0 = MNIST background).
    pub fill: u8,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            rotate_deg: 0.0,
            shift_px: 0.0,
            scale: 0.0,
            shear_deg: 0.0,
            elastic: None,
            fill: 0,
        }
    }
}

/// Elastic distortion's two numbers (Simard et al. 2003, §2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Elastic {
    /// Displacement scale `α` in pixels (the smoothed field, whose values are well under 1, is
    /// multiplied by it).
    pub alpha: f32,
    /// Standard deviation `σ` of the Gaussian that smooths the field, in pixels.
    pub sigma: f32,
}

impl Elastic {
    /// The displacement field of one `h x w` image: `2·h·w` values, all `Δx` then all `Δy`,
    /// `α·(G_σ * U(-1, 1))`. The Gaussian is cut at `3σ` and normalised to sum 1; it is applied
    /// separably (rows, then columns), with zero outside the image.
    pub fn field(&self, rng: &mut Rng, h: usize, w: usize) -> Vec<f32> {
        let radius = (3.0 * self.sigma).ceil().max(0.0) as usize;
        let kernel: Vec<f32> = (0..=2 * radius)
            .map(|k| {
                let d = k as f32 - radius as f32;
                (-d * d / (2.0 * self.sigma * self.sigma)).exp()
            })
            .collect();
        let total: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
        let mut field: Vec<f32> = (0..2 * h * w).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
        // Output i sums taps k of the kernel against inputs i + k - radius, over the k whose
        // input lies inside (zero outside): a contiguous range, so the inner loop is a plain
        // dot product with no bounds test (this runs for every training image).
        let taps = |i: usize, n: usize| {
            let lo = radius.saturating_sub(i);
            let hi = kernel.len().min(n + radius - i);
            (lo, hi, i + lo - radius)
        };
        let mut tmp = vec![0f32; h * w];
        let mut column = vec![0f32; h];
        for plane in field.chunks_mut(h * w) {
            // Rows (along x) into tmp.
            for (src, dst) in plane.chunks(w).zip(tmp.chunks_mut(w)) {
                for (x, d) in dst.iter_mut().enumerate() {
                    let (lo, hi, start) = taps(x, w);
                    *d = kernel[lo..hi].iter().zip(&src[start..]).map(|(g, v)| g * v).sum();
                }
            }
            // Columns (along y) back into the plane, times α.
            for x in 0..w {
                for (y, c) in column.iter_mut().enumerate() {
                    *c = tmp[y * w + x];
                }
                for y in 0..h {
                    let (lo, hi, start) = taps(y, h);
                    let acc: f32 = kernel[lo..hi].iter().zip(&column[start..]).map(|(g, v)| g * v).sum();
                    plane[y * w + x] = self.alpha * acc;
                }
            }
        }
        field
    }
}

/// One concrete geometric transform (what [`Augment`] draws for one image).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Counter-clockwise rotation in degrees about the image centre.
    pub angle_deg: f32,
    /// Translation in pixels (positive: right).
    pub shift_x: f32,
    /// Translation in pixels (positive: down).
    pub shift_y: f32,
    /// Zoom factor (1: none).
    pub scale: f32,
    /// Shear along x in degrees.
    pub shear_deg: f32,
}

/// The seed of the generator for image `index` in epoch `epoch`.
pub fn image_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    derive_seed(derive_seed(derive_seed(seed, AUGMENT_STREAM), epoch), index)
}

impl Augment {
    /// torchvision's `RandomRotation(degrees)`: rotation only, fill 0.
    pub fn rotation(degrees: f32) -> Augment {
        Augment {
            rotate_deg: degrees,
            ..Augment::default()
        }
    }

    /// Reject negative or non-finite ranges.
    pub fn validate(&self) -> Result<()> {
        let (alpha, sigma) = self.elastic.map_or((0.0, 1.0), |e| (e.alpha, e.sigma));
        for (name, v) in [
            ("rotate_deg", self.rotate_deg),
            ("shift_px", self.shift_px),
            ("scale", self.scale),
            ("shear_deg", self.shear_deg),
            ("elastic alpha", alpha),
            ("elastic sigma", sigma),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::config(format!(
                    "augment: {name} must be a finite number >= 0, found {v}"
                )));
            }
        }
        if self.scale >= 1.0 {
            return Err(Error::config(format!(
                "augment: scale must be below 1 (the zoom factor is drawn from [1 - scale, 1 + scale]), found {}",
                self.scale
            )));
        }
        if self.shear_deg >= 90.0 {
            return Err(Error::config(format!(
                "augment: shear_deg must be below 90 degrees, found {}",
                self.shear_deg
            )));
        }
        if sigma == 0.0 {
            return Err(Error::config("augment: elastic sigma must be > 0 pixels"));
        }
        Ok(())
    }

    /// Draw one transform: the angle, the x and y shifts (always three draws), then the zoom and
    /// the shear, each only when enabled (so older settings draw exactly what they drew before).
    pub fn sample(&self, rng: &mut Rng) -> Transform {
        let angle_deg = rng.uniform_in(-self.rotate_deg, self.rotate_deg);
        let shift_x = rng.uniform_in(-self.shift_px, self.shift_px).round();
        let shift_y = rng.uniform_in(-self.shift_px, self.shift_px).round();
        let scale = match self.scale > 0.0 {
            true => rng.uniform_in(1.0 - self.scale, 1.0 + self.scale),
            false => 1.0,
        };
        let shear_deg = match self.shear_deg > 0.0 {
            true => rng.uniform_in(-self.shear_deg, self.shear_deg),
            false => 0.0,
        };
        Transform {
            angle_deg,
            shift_x,
            shift_y,
            scale,
            shear_deg,
        }
    }

    /// The transform of image `index` in epoch `epoch` (deterministic).
    pub fn transform_for(&self, seed: u64, epoch: u64, index: u64) -> Transform {
        self.sample(&mut Rng::new(image_seed(seed, epoch, index)))
    }

    /// Augment one `C x H x W` image, writing `convert(pixel)` into `dst` (same length as `src`).
    pub fn apply_into<T>(
        &self,
        src: &[u8],
        shape: [usize; 3],
        (seed, epoch, index): (u64, u64, u64),
        dst: &mut [T],
        convert: impl Fn(u8) -> T,
    ) {
        let mut rng = Rng::new(image_seed(seed, epoch, index));
        let t = self.sample(&mut rng);
        match self.elastic {
            None => t.warp_into(src, shape, self.fill, dst, convert),
            Some(e) => {
                let field = e.field(&mut rng, shape[1], shape[2]);
                t.warp_displaced_into(src, shape, &field, self.fill, dst, convert)
            }
        }
    }

    /// Augment one `C x H x W` image into a new `u8` buffer.
    pub fn apply_u8(&self, src: &[u8], shape: [usize; 3], seed: u64, epoch: u64, index: u64) -> Vec<u8> {
        let mut dst = vec![0u8; src.len()];
        self.apply_into(src, shape, (seed, epoch, index), &mut dst, |p| p);
        dst
    }
}

impl Transform {
    /// No rotation, no shift.
    pub fn identity() -> Transform {
        Transform {
            angle_deg: 0.0,
            shift_x: 0.0,
            shift_y: 0.0,
            scale: 1.0,
            shear_deg: 0.0,
        }
    }

    /// The source point `(s_x, s_y)` output pixel `(x, y)` reads (the inverse map in the module
    /// docs), in f64 like PIL so that near-ties round the same way.
    fn source_map(&self, h: usize, w: usize) -> impl Fn(usize, usize) -> (f64, f64) {
        let (sin, cos) = (self.angle_deg as f64).to_radians().sin_cos();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let (tx, ty) = (self.shift_x as f64, self.shift_y as f64);
        let tan = (self.shear_deg as f64).to_radians().tan();
        let inv_k = 1.0 / self.scale as f64;
        let plain = self.scale == 1.0 && self.shear_deg == 0.0;
        move |x, y| {
            let (dx, dy) = (x as f64 - cx - tx, y as f64 - cy - ty);
            let (rx, ry) = (cos * dx - sin * dy, sin * dx + cos * dy);
            match plain {
                // Rotation and shift only: the exact arithmetic of the Pillow-checked warp.
                true => (rx + cx, ry + cy),
                false => ((rx - tan * ry) * inv_k + cx, ry * inv_k + cy),
            }
        }
    }

    /// Warp a `C x H x W` image (each channel alike) into `dst`, converting each output pixel.
    ///
    /// `src` and `dst` must both hold `C * H * W` values (checked by assertion: a caller bug,
    /// never a data error).
    pub fn warp_into<T>(&self, src: &[u8], [c, h, w]: [usize; 3], fill: u8, dst: &mut [T], convert: impl Fn(u8) -> T) {
        assert_eq!(src.len(), c * h * w, "warp_into: source is not C x H x W");
        assert_eq!(dst.len(), src.len(), "warp_into: destination size differs from source");
        let source_of = self.source_map(h, w);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = source_of(x, y);
                let (sx, sy) = ((sx + 0.5).floor(), (sy + 0.5).floor());
                let inside = sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64;
                let source = inside.then(|| sy as usize * w + sx as usize);
                for ch in 0..c {
                    let plane = ch * h * w;
                    let value = source.map_or(fill, |s| src[plane + s]);
                    dst[plane + y * w + x] = convert(value);
                }
            }
        }
    }

    /// Warp with an extra per-pixel displacement (`field`: `2·H·W` values, all `Δx` then all
    /// `Δy`, added to each output pixel's source point), sampled bilinearly.
    pub fn warp_displaced_into<T>(
        &self,
        src: &[u8],
        [c, h, w]: [usize; 3],
        field: &[f32],
        fill: u8,
        dst: &mut [T],
        convert: impl Fn(u8) -> T,
    ) {
        assert_eq!(src.len(), c * h * w, "warp_displaced_into: source is not C x H x W");
        assert_eq!(
            dst.len(),
            src.len(),
            "warp_displaced_into: destination size differs from source"
        );
        assert_eq!(field.len(), 2 * h * w, "warp_displaced_into: field is not 2 x H x W");
        let source_of = self.source_map(h, w);
        let (fx, fy) = field.split_at(h * w);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = source_of(x, y);
                let (sx, sy) = (sx + fx[y * w + x] as f64, sy + fy[y * w + x] as f64);
                let (x0, y0) = (sx.floor(), sy.floor());
                let (ax, ay) = (sx - x0, sy - y0);
                // The four neighbours and their weights; outside ones read the fill.
                let corners = [
                    (x0, y0, (1.0 - ax) * (1.0 - ay)),
                    (x0 + 1.0, y0, ax * (1.0 - ay)),
                    (x0, y0 + 1.0, (1.0 - ax) * ay),
                    (x0 + 1.0, y0 + 1.0, ax * ay),
                ];
                for ch in 0..c {
                    let plane = ch * h * w;
                    let mut acc = 0f64;
                    for &(px, py, wt) in &corners {
                        let inside = px >= 0.0 && py >= 0.0 && px < w as f64 && py < h as f64;
                        let v = match inside {
                            true => src[plane + py as usize * w + px as usize],
                            false => fill,
                        };
                        acc += wt * v as f64;
                    }
                    dst[plane + y * w + x] = convert(acc.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
    }

    /// Warp into a new `u8` buffer.
    pub fn warp_u8(&self, src: &[u8], shape: [usize; 3], fill: u8) -> Vec<u8> {
        let mut dst = vec![0u8; src.len()];
        self.warp_into(src, shape, fill, &mut dst, |p| p);
        dst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate(src: &[u8], shape: [usize; 3], angle_deg: f32) -> Vec<u8> {
        let t = Transform {
            angle_deg,
            ..Transform::identity()
        };
        t.warp_u8(src, shape, 0)
    }

    /// A 28x28 "image" with every pixel distinct modulo 256 and no symmetry.
    fn ramp() -> Vec<u8> {
        (0..784u32).map(|i| (i * 7 % 251) as u8 + 1).collect()
    }

    #[test]
    fn zero_rotation_and_zero_shift_is_the_identity() {
        let img = ramp();
        assert_eq!(Transform::identity().warp_u8(&img, [1, 28, 28], 0), img);
        let none = Augment::default();
        for i in 0..5 {
            assert_eq!(none.apply_u8(&img, [1, 28, 28], 9, 3, i), img);
        }
    }

    #[test]
    fn rotating_90_degrees_turns_counter_clockwise_about_the_centre() {
        // Odd size: the centre is the middle pixel.
        let img = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(rotate(&img, [1, 3, 3], 90.0), vec![3, 6, 9, 2, 5, 8, 1, 4, 7]);
        assert_eq!(rotate(&img, [1, 3, 3], -90.0), vec![7, 4, 1, 8, 5, 2, 9, 6, 3]);
        assert_eq!(rotate(&img, [1, 3, 3], 180.0), vec![9, 8, 7, 6, 5, 4, 3, 2, 1]);
        // Even size: the centre (1.5, 1.5) lies between pixels, so 90° is still an exact
        // permutation with nothing lost to the fill (a centre of W/2 would shift it by one).
        let img: Vec<u8> = (1..=16).collect();
        #[rustfmt::skip]
        let expected = vec![
            4, 8, 12, 16,
            3, 7, 11, 15,
            2, 6, 10, 14,
            1, 5, 9, 13,
        ];
        assert_eq!(rotate(&img, [1, 4, 4], 90.0), expected);
    }

    #[test]
    fn rotation_of_a_non_square_image_fills_outside_with_the_fill_value() {
        // 2 rows x 4 cols, centre (1.5, 0.5). Rotated 90°, only the middle columns have sources.
        let img = [1, 2, 3, 4, 5, 6, 7, 8];
        let t = Transform {
            angle_deg: 90.0,
            ..Transform::identity()
        };
        // Output (x, y) reads s = (1.5 - (y - 0.5), 0.5 + (x - 1.5)) rounded half up.
        assert_eq!(t.warp_u8(&img, [1, 2, 4], 99), vec![99, 3, 7, 99, 99, 2, 6, 99]);
    }

    #[test]
    fn shift_moves_content_right_and_down_with_fill() {
        let img: Vec<u8> = (1..=9).collect();
        let t = Transform {
            shift_x: 1.0,
            shift_y: -1.0,
            ..Transform::identity()
        };
        assert_eq!(t.warp_u8(&img, [1, 3, 3], 0), vec![0, 4, 5, 0, 7, 8, 0, 0, 0]);
    }

    #[test]
    fn channels_are_transformed_alike() {
        let red: Vec<u8> = (1..=9).collect();
        let green: Vec<u8> = (11..=19).collect();
        let out = rotate(&[red.clone(), green.clone()].concat(), [2, 3, 3], 90.0);
        assert_eq!(out[..9], rotate(&red, [1, 3, 3], 90.0)[..]);
        assert_eq!(out[9..], rotate(&green, [1, 3, 3], 90.0)[..]);
    }

    #[test]
    fn augmentation_is_deterministic_per_seed_epoch_and_index() {
        let img = ramp();
        let aug = Augment {
            rotate_deg: 15.0,
            shift_px: 2.0,
            ..Augment::default()
        };
        let a = aug.apply_u8(&img, [1, 28, 28], 42, 1, 7);
        assert_eq!(a, aug.apply_u8(&img, [1, 28, 28], 42, 1, 7));
        assert_ne!(a, aug.apply_u8(&img, [1, 28, 28], 43, 1, 7), "seed must matter");
        assert_ne!(a, aug.apply_u8(&img, [1, 28, 28], 42, 2, 7), "epoch must matter");
        assert_ne!(a, aug.apply_u8(&img, [1, 28, 28], 42, 1, 8), "index must matter");
    }

    #[test]
    fn sampled_parameters_stay_in_range_and_cover_it() {
        let aug = Augment {
            rotate_deg: 15.0,
            shift_px: 2.0,
            ..Augment::default()
        };
        let ts: Vec<Transform> = (0..2000).map(|i| aug.transform_for(1, 0, i)).collect();
        assert!(ts.iter().all(|t| t.angle_deg.abs() <= 15.0));
        assert!(ts.iter().any(|t| t.angle_deg > 14.0) && ts.iter().any(|t| t.angle_deg < -14.0));
        let shifts: std::collections::BTreeSet<i32> = ts.iter().map(|t| t.shift_x as i32).collect();
        assert_eq!(shifts.into_iter().collect::<Vec<_>>(), vec![-2, -1, 0, 1, 2]);
        assert!(ts.iter().all(|t| t.shift_x.fract() == 0.0 && t.shift_y.fract() == 0.0));
    }

    #[test]
    fn zoom_reads_towards_the_centre_and_shear_slides_rows() {
        // 5x5, centre (2, 2); zoom 2 reads s = (o - c)/2 + c: columns 1,2,2,3,3 (half up).
        let img: Vec<u8> = (1..=25).collect();
        let zoom = Transform {
            scale: 2.0,
            ..Transform::identity()
        };
        let cols = [1usize, 2, 2, 3, 3];
        let expected: Vec<u8> = (0..25).map(|i| img[cols[i / 5] * 5 + cols[i % 5]]).collect();
        assert_eq!(zoom.warp_u8(&img, [1, 5, 5], 0), expected);
        // Shear 45° along x: output (x, y) reads (x - (y - 1), y) on 3x3: the top row moves
        // left, the bottom row right, the middle row stays.
        let img: Vec<u8> = (1..=9).collect();
        let shear = Transform {
            shear_deg: 45.0,
            ..Transform::identity()
        };
        assert_eq!(shear.warp_u8(&img, [1, 3, 3], 0), vec![2, 3, 0, 4, 5, 6, 0, 7, 8]);
    }

    #[test]
    fn zoom_and_shear_draw_after_rotation_and_shift_and_stay_in_range() {
        let plain = Augment {
            rotate_deg: 15.0,
            shift_px: 2.0,
            ..Augment::default()
        };
        let full = Augment {
            scale: 0.1,
            shear_deg: 10.0,
            ..plain.clone()
        };
        for i in 0..500 {
            let (a, b) = (plain.transform_for(3, 1, i), full.transform_for(3, 1, i));
            // An older setting's draws are unchanged by the new ones coming after them.
            assert_eq!((a.angle_deg, a.shift_x, a.shift_y), (b.angle_deg, b.shift_x, b.shift_y));
            assert_eq!((a.scale, a.shear_deg), (1.0, 0.0));
            assert!((0.9..=1.1).contains(&b.scale) && b.shear_deg.abs() <= 10.0, "{b:?}");
        }
        let ts: Vec<Transform> = (0..500).map(|i| full.transform_for(3, 1, i)).collect();
        assert!(ts.iter().any(|t| t.scale > 1.08) && ts.iter().any(|t| t.scale < 0.92));
        assert!(ts.iter().any(|t| t.shear_deg > 9.0) && ts.iter().any(|t| t.shear_deg < -9.0));
    }

    #[test]
    fn displaced_warp_is_bilinear_and_exact_at_whole_pixels() {
        let img = ramp();
        // No displacement, no transform: every source is a whole pixel, read exactly.
        let zero = vec![0f32; 2 * 784];
        let mut out = vec![0u8; 784];
        Transform::identity().warp_displaced_into(&img, [1, 28, 28], &zero, 0, &mut out, |p| p);
        assert_eq!(out, img);
        // Half a pixel right: the mean of a pixel and its right neighbour, the fill past the edge.
        let img = [10u8, 20, 41, 100, 0, 7];
        let mut field = vec![0.5f32, 0.5, 0.5, 0.5, 0.5, 0.5];
        field.extend([0f32; 6]);
        let mut out = [0u8; 6];
        Transform::identity().warp_displaced_into(&img, [1, 2, 3], &field, 200, &mut out, |p| p);
        assert_eq!(out, [15, 31, 121, 50, 4, 104]); // (41+200)/2 = 120.5 and (7+200)/2 rounds up
    }

    #[test]
    fn elastic_field_is_smooth_bounded_and_scaled_by_alpha() {
        let e = Elastic { alpha: 8.0, sigma: 4.0 };
        let f = e.field(&mut Rng::new(5), 28, 28);
        assert_eq!(f.len(), 2 * 784);
        assert!(f.iter().all(|v| v.is_finite() && v.abs() <= 8.0));
        // Smooth: neighbours differ far less than independent U(-8, 8) values would (~6.5 apart).
        let mean_step: f32 = (0..27)
            .map(|x| (f[14 * 28 + x + 1] - f[14 * 28 + x]).abs())
            .sum::<f32>()
            / 27.0;
        assert!(mean_step < 0.5, "{mean_step}");
        assert!(f.iter().any(|v| v.abs() > 0.05), "not all zero");
        // α scales it linearly; a tiny σ leaves the raw U(-α, α) values.
        let g = Elastic {
            alpha: 16.0,
            sigma: 4.0,
        }
        .field(&mut Rng::new(5), 28, 28);
        assert!(f.iter().zip(&g).all(|(a, b)| (2.0 * a - b).abs() < 1e-5));
        let raw = Elastic {
            alpha: 1.0,
            sigma: 0.01,
        }
        .field(&mut Rng::new(5), 28, 28);
        assert!(raw.iter().any(|v| *v > 0.9) && raw.iter().any(|v| *v < -0.9));
        // Off (α = 0): the image as it was, through the bilinear path.
        let none = Augment {
            elastic: Some(Elastic { alpha: 0.0, sigma: 4.0 }),
            ..Augment::default()
        };
        assert_eq!(none.apply_u8(&ramp(), [1, 28, 28], 1, 1, 1), ramp());
        let on = Augment {
            elastic: Some(e),
            ..Augment::default()
        };
        let a = on.apply_u8(&ramp(), [1, 28, 28], 1, 1, 1);
        assert_ne!(a, ramp());
        assert_eq!(a, on.apply_u8(&ramp(), [1, 28, 28], 1, 1, 1), "deterministic");
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        assert!(Augment::rotation(15.0).validate().is_ok());
        let e = Augment::rotation(-1.0).validate().unwrap_err();
        assert!(e.to_string().contains("rotate_deg"), "{e}");
        let bad_shift = Augment {
            shift_px: f32::NAN,
            ..Augment::default()
        };
        assert!(bad_shift.validate().unwrap_err().to_string().contains("shift_px"));
        for (aug, what) in [
            (
                Augment {
                    scale: 1.0,
                    ..Augment::default()
                },
                "scale",
            ),
            (
                Augment {
                    shear_deg: 90.0,
                    ..Augment::default()
                },
                "shear_deg",
            ),
            (
                Augment {
                    elastic: Some(Elastic {
                        alpha: 34.0,
                        sigma: 0.0,
                    }),
                    ..Augment::default()
                },
                "sigma",
            ),
            (
                Augment {
                    elastic: Some(Elastic {
                        alpha: -1.0,
                        sigma: 4.0,
                    }),
                    ..Augment::default()
                },
                "alpha",
            ),
        ] {
            let e = aug.validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
