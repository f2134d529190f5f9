//! Augmentation for photos: random resized crop, horizontal flip, small rotation and shift, and
//! colour jitter, then per-channel normalisation; what torchvision's `RandomResizedCrop`,
//! `RandomHorizontalFlip`, `RandomRotation`, `ColorJitter` and `Normalize` do, on the
//! `C × S × S` bytes the folder loader keeps in memory.
//!
//! **Geometry** (one affine map, sampled once, bilinearly, fill 0 outside the image as
//! torchvision's default): output pixel centre `(x + ½, y + ½)` becomes `u = (x + ½) / S`
//! (flipped to `1 − u` with probability ½ when `flip`), then a point of the crop box
//! `(x0 + u·w, y0 + v·h)`, then that point rotated by the angle about the box's centre and
//! moved by the shift. The crop box is drawn as torchvision's `RandomResizedCrop.get_params`
//! draws it: an area fraction `s ∈ [lo, hi]` and a log-uniform aspect ratio `r ∈ [¾, 4/3]`,
//! `w = √(s·r)·S`, `h = √(s/r)·S`, retried up to 10 times until it fits, else the whole image.
//! It is cut from the image already resized to the model's size (the loader keeps only that),
//! so a small crop is upsampled from fewer pixels than torchvision, which crops the original.
//!
//! **Colour** (`jitter = j`, each factor uniform in `[1 − j, 1 + j]`, applied in this fixed
//! order; torchvision shuffles the order): brightness `p·b`; contrast `c·p + (1 − c)·m` with `m`
//! the image's mean gray; saturation `s·p + (1 − s)·gray(p)` (gray = ITU-R 601 luma, as
//! torchvision's `rgb_to_grayscale`); each clamped to `[0, 255]`. Gray images get brightness and
//! contrast only.
//!
//! **Reproducibility**: each image's draws come from a generator seeded by
//! `(seed, epoch, index)` (as [`super::augment`]), independent of batching and threads.

use serde::{Deserialize, Serialize};

use super::augment::image_seed;
use crate::error::{Error, Result};
use crate::rng::{derive_seed, Rng};

/// Stream tag separating photo augmentation from the digit augmentation's draws.
const PHOTO_STREAM: u64 = 0x7068_6f74_6f21; // "photo!"

/// Random photo augmentation; `PhotoAugment::default()` is the identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhotoAugment {
    /// Random resized crop: the crop's area as a fraction of the image, `[lo, hi]`
    /// (torchvision's default `(0.08, 1.0)`); `None`: no crop.
    #[serde(default)]
    pub crop_scale: Option<[f32; 2]>,
    /// Mirror left-right with probability ½.
    #[serde(default)]
    pub flip: bool,
    /// Rotation, uniform in `[−rotate_deg, rotate_deg]` degrees, counter-clockwise.
    #[serde(default)]
    pub rotate_deg: f32,
    /// Shift, uniform in `[−shift_px, shift_px]` pixels per axis.
    #[serde(default)]
    pub shift_px: f32,
    /// Brightness, contrast and saturation jitter strength in `[0, 1)`.
    #[serde(default)]
    pub jitter: f32,
}

/// What [`PhotoAugment`] draws for one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhotoDraw {
    /// Crop box `(x0, y0, w, h)` in pixels of the stored image.
    pub crop: (f64, f64, f64, f64),
    pub flip: bool,
    pub angle_deg: f64,
    pub shift: (f64, f64),
    /// Brightness, contrast, saturation factors.
    pub colour: [f32; 3],
}

impl PhotoAugment {
    /// Whether it changes anything.
    pub fn is_identity(&self) -> bool {
        *self == PhotoAugment::default()
    }

    /// Reject ranges that mean nothing.
    pub fn validate(&self) -> Result<()> {
        if let Some([lo, hi]) = self.crop_scale {
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err(Error::config(format!(
                    "--crop-scale needs 0 < low <= high <= 1, found {lo},{hi}"
                )));
            }
        }
        let bad = |what: &str| Err(Error::config(format!("photo augmentation: {what}")));
        if !(self.rotate_deg.is_finite() && (0.0..=180.0).contains(&self.rotate_deg)) {
            return bad("--rotate must be between 0 and 180 degrees");
        }
        if !(self.shift_px.is_finite() && self.shift_px >= 0.0) {
            return bad("--shift must be a non-negative number of pixels");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("--jitter must be in [0, 1)");
        }
        Ok(())
    }

    /// The draws for one `size × size` image (always the same number of draws, in one order).
    pub fn draw(&self, size: usize, rng: &mut Rng) -> PhotoDraw {
        let s = size as f64;
        let mut crop = (0.0, 0.0, s, s);
        if let Some([lo, hi]) = self.crop_scale {
            for _ in 0..10 {
                let area = rng.uniform_in(lo, hi) as f64 * s * s;
                let log_r = rng.uniform_in((3.0f32 / 4.0).ln(), (4.0f32 / 3.0).ln()) as f64;
                let r = log_r.exp();
                let (w, h) = ((area * r).sqrt(), (area / r).sqrt());
                if w <= s && h <= s {
                    let x0 = rng.uniform() as f64 * (s - w);
                    let y0 = rng.uniform() as f64 * (s - h);
                    crop = (x0, y0, w, h);
                    break;
                }
            }
        }
        let flip = self.flip && rng.uniform() < 0.5;
        let angle_deg = rng.uniform_in(-self.rotate_deg, self.rotate_deg) as f64;
        let shift = (
            rng.uniform_in(-self.shift_px, self.shift_px) as f64,
            rng.uniform_in(-self.shift_px, self.shift_px) as f64,
        );
        let j = self.jitter;
        let colour = [0; 3].map(|_| rng.uniform_in(1.0 - j, 1.0 + j));
        PhotoDraw {
            crop,
            flip,
            angle_deg,
            shift,
            colour,
        }
    }

    /// Augment image `index` of epoch `epoch` (`[c, size, size]` bytes) into `dst` as pixel
    /// values in `[0, 255]` (f32, not yet normalised).
    pub fn apply(&self, src: &[u8], [c, h, w]: [usize; 3], (seed, epoch, index): (u64, u64, u64), dst: &mut [f32]) {
        let mut rng = Rng::new(derive_seed(image_seed(seed, epoch, index), PHOTO_STREAM));
        let d = self.draw(w.max(h), &mut rng);
        warp_bilinear(src, [c, h, w], &d, dst);
        if self.jitter > 0.0 {
            jitter(dst, [c, h, w], d.colour);
        }
    }
}

/// Sample the affine map of `d` bilinearly (pixel centres at `i + ½`; fill 0 outside).
fn warp_bilinear(src: &[u8], [c, h, w]: [usize; 3], d: &PhotoDraw, dst: &mut [f32]) {
    let (x0, y0, cw, ch) = d.crop;
    let (ccx, ccy) = (x0 + cw / 2.0, y0 + ch / 2.0);
    let (sin, cos) = d.angle_deg.to_radians().sin_cos();
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let mut u = (x as f64 + 0.5) / w as f64;
            if d.flip {
                u = 1.0 - u;
            }
            let v = (y as f64 + 0.5) / h as f64;
            // A point of the crop box, rotated about its centre, shifted.
            let (px, py) = (x0 + u * cw - ccx - d.shift.0, y0 + v * ch - ccy - d.shift.1);
            let sx = cos * px - sin * py + ccx - 0.5;
            let sy = sin * px + cos * py + ccy - 0.5;
            let (fx, fy) = (sx.floor(), sy.floor());
            let (ax, ay) = ((sx - fx) as f32, (sy - fy) as f32);
            let at = |yy: f64, xx: f64| -> Option<usize> {
                (xx >= 0.0 && yy >= 0.0 && xx < w as f64 && yy < h as f64).then(|| yy as usize * w + xx as usize)
            };
            let taps = [
                (at(fy, fx), (1.0 - ax) * (1.0 - ay)),
                (at(fy, fx + 1.0), ax * (1.0 - ay)),
                (at(fy + 1.0, fx), (1.0 - ax) * ay),
                (at(fy + 1.0, fx + 1.0), ax * ay),
            ];
            for ch_i in 0..c {
                let base = ch_i * plane;
                let v: f32 = taps
                    .iter()
                    .map(|&(i, wt)| i.map_or(0.0, |i| src[base + i] as f32 * wt))
                    .sum();
                dst[base + y * w + x] = v;
            }
        }
    }
}

/// Brightness, contrast, saturation (see the module documentation), clamped to `[0, 255]`.
fn jitter(px: &mut [f32], [c, h, w]: [usize; 3], [b, k, s]: [f32; 3]) {
    let plane = h * w;
    let luma = |px: &[f32], i: usize| match c {
        3 => 0.299 * px[i] + 0.587 * px[plane + i] + 0.114 * px[2 * plane + i],
        _ => px[i],
    };
    px.iter_mut().for_each(|v| *v = (*v * b).clamp(0.0, 255.0));
    let mean = (0..plane).map(|i| luma(px, i)).sum::<f32>() / plane as f32;
    px.iter_mut()
        .for_each(|v| *v = (k * *v + (1.0 - k) * mean).clamp(0.0, 255.0));
    if c == 3 {
        for i in 0..plane {
            let g = luma(px, i);
            for ch in 0..3 {
                let v = &mut px[ch * plane + i];
                *v = (s * *v + (1.0 - s) * g).clamp(0.0, 255.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(c: usize, s: usize) -> Vec<u8> {
        (0..c * s * s).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn the_identity_copies_and_a_flip_mirrors() {
        let src = image(3, 6);
        let mut out = vec![0f32; src.len()];
        PhotoAugment::default().apply(&src, [3, 6, 6], (1, 2, 3), &mut out);
        assert!(out.iter().zip(&src).all(|(a, &b)| (a - b as f32).abs() < 1e-3));
        let flip = PhotoDraw {
            crop: (0.0, 0.0, 6.0, 6.0),
            flip: true,
            angle_deg: 0.0,
            shift: (0.0, 0.0),
            colour: [1.0; 3],
        };
        warp_bilinear(&src, [3, 6, 6], &flip, &mut out);
        for (y, x) in [(0, 0), (2, 5), (5, 3)] {
            assert!((out[36 + y * 6 + x] - src[36 + y * 6 + 5 - x] as f32).abs() < 1e-3);
        }
    }

    #[test]
    fn draws_repeat_with_the_key_and_stay_in_range() {
        let aug = PhotoAugment {
            crop_scale: Some([0.3, 1.0]),
            flip: true,
            rotate_deg: 10.0,
            shift_px: 2.0,
            jitter: 0.4,
        };
        aug.validate().unwrap();
        let src = image(3, 16);
        let run = |k: u64| {
            let mut out = vec![0f32; src.len()];
            aug.apply(&src, [3, 16, 16], (7, 1, k), &mut out);
            out
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
        assert!(run(9).iter().all(|v| (0.0..=255.0).contains(v)));
        for _ in 0..50 {
            let d = aug.draw(16, &mut Rng::new(3));
            let (x0, y0, w, h) = d.crop;
            assert!(x0 >= 0.0 && y0 >= 0.0 && x0 + w <= 16.0 + 1e-9 && y0 + h <= 16.0 + 1e-9);
        }
        assert!(PhotoAugment {
            jitter: 1.0,
            ..PhotoAugment::default()
        }
        .validate()
        .is_err());
        assert!(PhotoAugment {
            crop_scale: Some([0.0, 1.0]),
            ..PhotoAugment::default()
        }
        .validate()
        .is_err());
    }
}
