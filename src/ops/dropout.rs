//! # Dropout (seeded, counter-based)
//!
//! ## Forward
//! During training each element is zeroed with probability `p` and the survivors are scaled by
//! `1/(1−p)`, so the expected value of every element is unchanged (at evaluation dropout is the
//! identity and is simply not applied):
//! ```text
//! keep_i = (u_i ≥ p)          u_i = uniform(seed, i) ∈ [0, 1) (24 random bits / 2²⁴)
//! y_i = keep_i · x_i / (1 − p)
//! ```
//! `u_i` is a hash of `(seed, i)` ([`keep_uniform`]), not a draw from a stateful generator: the
//! mask is the same whatever thread or device computes it, and the backward recomputes it instead
//! of storing it (a 512×50×2048 mask would be another 210 MB).
//!
//! ## Backward
//! `y` is linear in `x` with the mask fixed: `dx_i = keep_i · G_i / (1 − p)`.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::map_into;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// MurmurHash3's 32-bit finaliser: two 32-bit multiplies, so it vectorises (and is cheap on a GPU).
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The 24 random bits of element `i` under `seed`. The CUDA kernel computes exactly this.
#[inline(always)]
fn bits24(seed: u64, i: u32) -> i32 {
    let h = fmix32(fmix32(i ^ seed as u32).wrapping_add((seed >> 32) as u32) ^ 0x9e37_79b9);
    (h >> 8) as i32
}

/// The dropout uniform for element `i` under `seed`: `u_i = bits24 / 2²⁴` in [0, 1).
#[inline(always)]
pub fn keep_uniform(seed: u64, i: u32) -> f32 {
    bits24(seed, i) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `u_i ≥ p` ⇔ `bits24 ≥ ⌈p·2²⁴⌉`: the threshold for [`keep`], so the hot loop compares
/// integers (this vectorises; a float conversion per element would not as well).
pub fn keep_threshold(p: f32) -> i32 {
    (p as f64 * (1u32 << 24) as f64).ceil() as i32
}

/// Whether element `i` survives: exactly `keep_uniform(seed, i) >= p` for `threshold = keep_threshold(p)`.
#[inline(always)]
pub fn keep(seed: u64, i: u32, threshold: i32) -> bool {
    bits24(seed, i) >= threshold
}

fn check_p(p: f32) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::config(format!("dropout probability must be in [0, 1), got {p}")))
    }
}

/// `x ⊙ mask(seed) / (1 − p)`; also the backward (apply it to G with the same seed).
pub fn apply_mask(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    check_p(p)?;
    if x.numel() > u32::MAX as usize {
        return Err(Error::shape("dropout", x.shape(), &[], "more than 2^32 elements"));
    }
    match x.device() {
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            let scale = 1.0 / (1.0 - p);
            let threshold = keep_threshold(p);
            map_into(y.data_mut(), |off, out| {
                for (j, (o, &v)) in out.iter_mut().zip(&xd[off..]).enumerate() {
                    *o = if keep(seed, (off + j) as u32, threshold) {
                        v * scale
                    } else {
                        0.0
                    };
                }
            });
            Ok(y)
        }
    }
}

struct Dropout {
    p: f32,
    seed: u64,
}

impl Op for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        apply_mask(x[0], self.p, self.seed)
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(apply_mask(g, self.p, self.seed)?)])
    }
}

impl Graph {
    /// Training-mode dropout with probability `p` and mask seed `seed` (`p = 0` records nothing).
    pub fn dropout(&mut self, x: Var, p: f32, seed: u64) -> Result<Var> {
        check_p(p)?;
        if p == 0.0 {
            return Ok(x);
        }
        self.apply(Dropout { p, seed }, &[x])
    }
}
