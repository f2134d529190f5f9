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
//!
//! ## Fused with the residual add
//! Every dropout in an encoder block but one is followed by the residual add, `x + drop(a)`.
//! [`Graph::dropout_add`] does both in one pass over memory instead of two (a step's residual
//! stream is read and written a dozen times, so passes are what the CPU time goes to):
//! ```text
//! y = r + keep ⊙ a / (1 − p)         r, a, y: same shape
//! dr = G                              (the add passes the gradient through)
//! da = keep ⊙ G / (1 − p)             (as plain dropout)
//! ```
//! It equals `add(r, dropout(a))` bit for bit; a test checks that, and the gradient check covers
//! its backward. (GELU's dropout is fused the same way, in `ops::gelu`.)

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::map_into;
use crate::backend::{same_device, Device};
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

/// Elements per block of mask factors: small enough to stay in L1 beside the data it scales.
pub const MASK_BLOCK: usize = 256;

/// One dropout mask (probability and seed), evaluated as multiplicative factors: `1/(1−p)` where
/// an element is kept, 0 where it is dropped. Element `i`'s factor depends only on `(seed, i)`.
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    p: f32,
    seed: u64,
    threshold: i32,
    scale: f32,
}

impl Mask {
    pub fn new(p: f32, seed: u64) -> Result<Mask> {
        check_p(p)?;
        Ok(Mask {
            p,
            seed,
            threshold: keep_threshold(p),
            scale: 1.0 / (1.0 - p),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// The seed (the GPU kernels hash `(seed, i)` the same way).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The factors of elements `first .. first + out.len()`.
    ///
    /// Why a separate pass into a small buffer: computed inline inside a larger loop the hash
    /// did not vectorise (it ran one element at a time, 6× slower); alone, this loop does.
    #[inline(never)]
    pub fn factors(&self, first: u32, out: &mut [f32]) {
        let (seed, threshold, scale) = (self.seed, self.threshold, self.scale);
        for (j, f) in (0u32..).zip(out.iter_mut()) {
            *f = if keep(seed, first.wrapping_add(j), threshold) {
                scale
            } else {
                0.0
            };
        }
    }

    /// `f(offset, out_block, factors)` over `out` in parallel blocks of at most [`MASK_BLOCK`]
    /// elements, `offset` being the block's first element index (so inputs are read at the same
    /// offsets) and `factors` the mask there.
    pub fn map_into(&self, out: &mut [f32], f: impl Fn(usize, &mut [f32], &[f32]) + Sync + Send) {
        map_into(out, |off, chunk| {
            let mut buf = [0.0f32; MASK_BLOCK];
            for (b, block) in chunk.chunks_mut(MASK_BLOCK).enumerate() {
                let first = off + b * MASK_BLOCK;
                let factors = &mut buf[..block.len()];
                self.factors(first as u32, factors);
                f(first, block, factors);
            }
        });
    }
}

/// `x · m` for a kept element, +0 for a dropped one whatever `x` is (no −0, and no NaN or ∞ leaks
/// through a dropped element): the CUDA kernel's `keep ? x·scale : 0`, bit for bit.
#[inline(always)]
pub fn masked(x: f32, m: f32) -> f32 {
    if m != 0.0 {
        x * m
    } else {
        0.0
    }
}

/// Dropout indexes elements with a u32 counter.
pub(crate) fn check_len(op: &'static str, x: &Tensor) -> Result<()> {
    if x.numel() > u32::MAX as usize {
        return Err(Error::shape(op, x.shape(), &[], "more than 2^32 elements"));
    }
    Ok(())
}
/// `x ⊙ mask(seed) / (1 − p)`; also the backward (apply it to G with the same seed).
pub fn apply_mask(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let mask = Mask::new(p, seed)?;
    check_len("dropout", x)?;
    match x.device() {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| dev.dropout_fwd(x.cuda()?, y, x.numel(), p, seed)),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            mask.map_into(y.data_mut(), |off, out, fac| {
                for ((o, &v), &m) in out.iter_mut().zip(&xd[off..]).zip(fac) {
                    *o = masked(v, m);
                }
            });
            Ok(y)
        }
    }
}

/// `r + x ⊙ mask(seed) / (1 − p)` in one pass.
pub fn add_masked(r: &Tensor, x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let mask = Mask::new(p, seed)?;
    if r.shape() != x.shape() {
        return Err(Error::shape(
            "dropout_add",
            r.shape(),
            x.shape(),
            "residual and input must match",
        ));
    }
    check_len("dropout_add", x)?;
    match same_device("dropout_add", &[r, x])? {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| {
            dev.dropout_add_fwd(r.cuda()?, x.cuda()?, y, x.numel(), p, seed)
        }),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let (rd, xd) = (r.data(), x.data());
            mask.map_into(y.data_mut(), |off, out, fac| {
                for (((o, &rv), &v), &m) in out.iter_mut().zip(&rd[off..]).zip(&xd[off..]).zip(fac) {
                    *o = rv + masked(v, m);
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

struct DropoutAdd {
    p: f32,
    seed: u64,
}

impl Op for DropoutAdd {
    fn name(&self) -> &'static str {
        "dropout_add"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        add_masked(x[0], x[1], self.p, self.seed)
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let dr = needs[0].then(|| g.clone());
        let da = if needs[1] {
            Some(apply_mask(g, self.p, self.seed)?)
        } else {
            None
        };
        Ok(vec![dr, da])
    }
}

impl Graph {
    /// `residual + dropout(x, p, seed)` fused (see the module doc); with `p = 0` a plain add.
    pub fn dropout_add(&mut self, residual: Var, x: Var, p: f32, seed: u64) -> Result<Var> {
        check_p(p)?;
        if p == 0.0 {
            return self.add(residual, x);
        }
        self.apply(DropoutAdd { p, seed }, &[residual, x])
    }

    /// Training-mode dropout with probability `p` and mask seed `seed` (`p = 0` records nothing).
    pub fn dropout(&mut self, x: Var, p: f32, seed: u64) -> Result<Var> {
        check_p(p)?;
        if p == 0.0 {
            return Ok(x);
        }
        self.apply(Dropout { p, seed }, &[x])
    }
}
