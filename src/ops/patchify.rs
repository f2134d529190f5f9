//! # Conv-as-patchify
//!
//! A ViT's patch embedding is a convolution with kernel = stride = P. Because the patches do not
//! overlap, it is exactly "cut the image into P×P patches, flatten each, multiply by a matrix":
//!
//! ## Forward
//! ```text
//! x: [B, C, H, W]  →  patches: [B, N, C·P·P]      N = (H/P)·(W/P), patches in row-major order
//! patches[b, gy·(W/P) + gx, c·P·P + py·P + px] = x[b, c, gy·P + py, gx·P + px]
//! ```
//! Each patch is flattened in (channel, row, col) order, the order of PyTorch's conv weight
//! `[D, C, P, P]`; so `patch_embed.proj.weight` reshaped to `[D, C·P·P]` is the matrix of the
//! following linear layer, and `linear(patchify(x), W, b)` equals `Conv2d(x)` flattened and
//! transposed to `[B, N, D]`.
//!
//! ## Backward
//! Every pixel lands in exactly one patch slot (non-overlapping patches), so patchify is a
//! permutation of the elements and its gradient is the inverse gather, a scatter:
//! `dx[b, c, gy·P + py, gx·P + px] = G[b, gy·(W/P) + gx, c·P·P + py·P + px]`.
//! (H and W must be multiples of P; a remainder would be pixels the model never sees.)

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::for_each_row;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// (B, C, H, W) checked against the patch size.
fn dims(x: &[usize], p: usize) -> Result<[usize; 4]> {
    match *x {
        [b, c, h, w] if p > 0 && h % p == 0 && w % p == 0 => Ok([b, c, h, w]),
        _ => Err(Error::shape(
            "patchify",
            x,
            &[p],
            "need [B, C, H, W] with H and W multiples of the patch size",
        )),
    }
}

/// Offset in x of element `f` of patch `n` in image `b`.
#[inline(always)]
fn src(b: usize, n: usize, f: usize, [_, c, h, w]: [usize; 4], p: usize) -> usize {
    let (gw, pp) = (w / p, p * p);
    let (gy, gx) = (n / gw, n % gw);
    let (ch, py, px) = (f / pp, (f % pp) / p, f % p);
    ((b * c + ch) * h + gy * p + py) * w + gx * p + px
}

/// `[B, C, H, W] → [B, N, C·P·P]`.
pub fn forward(x: &Tensor, p: usize) -> Result<Tensor> {
    let d = dims(x.shape(), p)?;
    let [b, c, h, w] = d;
    let (n, f) = ((h / p) * (w / p), c * p * p);
    match x.device() {
        Device::Cuda => Tensor::gpu_output(&[b, n, f], |dev, y| dev.patchify_fwd(x.cuda()?, y, d, p)),
        Device::Cpu => {
            let mut y = Tensor::scratch(&[b, n, f]);
            let xd = x.data();
            for_each_row(y.data_mut(), f, |row, out| {
                let (bi, ni) = (row / n, row % n);
                for (fi, o) in out.iter_mut().enumerate() {
                    *o = xd[src(bi, ni, fi, d, p)];
                }
            });
            Ok(y)
        }
    }
}

/// The scatter back to image layout.
pub fn backward(g: &Tensor, x_shape: &[usize], p: usize) -> Result<Tensor> {
    let d = dims(x_shape, p)?;
    let [b, c, h, w] = d;
    let (n, f) = ((h / p) * (w / p), c * p * p);
    if g.shape() != [b, n, f] {
        return Err(Error::shape(
            "patchify backward",
            g.shape(),
            &[b, n, f],
            "gradient shape",
        ));
    }
    match g.device() {
        Device::Cuda => Tensor::gpu_output(x_shape, |dev, dx| dev.patchify_bwd(g.cuda()?, dx, d, p)),
        Device::Cpu => {
            let mut dx = Tensor::scratch(x_shape);
            let gd = g.data();
            // Walk the image row by row (each output pixel written once, by one thread).
            for_each_row(dx.data_mut(), w, |row, out| {
                let (bc, yy) = (row / h, row % h);
                let (bi, ch) = (bc / c, bc % c);
                let (gy, py) = (yy / p, yy % p);
                for (xx, o) in out.iter_mut().enumerate() {
                    let (gx, px) = (xx / p, xx % p);
                    *o = gd[(bi * n + gy * (w / p) + gx) * f + ch * p * p + py * p + px];
                }
            });
            Ok(dx)
        }
    }
}

struct Patchify(usize);

impl Op for Patchify {
    fn name(&self) -> &'static str {
        "patchify"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        forward(x[0], self.0)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(backward(g, x[0].shape(), self.0)?)])
    }
}

impl Graph {
    /// Cut `[B, C, H, W]` images into flattened `P×P` patches: `[B, N, C·P·P]`.
    pub fn patchify(&mut self, x: Var, patch: usize) -> Result<Var> {
        dims(self.shape(x), patch)?;
        self.apply(Patchify(patch), &[x])
    }
}
