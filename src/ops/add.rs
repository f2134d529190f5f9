//! # Addition: residual add, bias add, broadcast add
//!
//! ## Forward
//! ```text
//! add:           y = a + b                 a, b: same shape            (residual connections)
//! add_bias:      y[..., j] = x[..., j] + b[j]       b: [N], x: [..., N]
//! add_broadcast: y = a + broadcast(b)      b's shape, aligned to the right of a's, has each
//!                                          dimension either 1 or equal to a's (e.g. the position
//!                                          embedding [1, T, D] added to tokens [B, T, D])
//! ```
//! The result always has `a`'s shape.
//!
//! ## Backward
//! Addition passes the gradient through unchanged: `∂y/∂a = 1`, so `da = G`. Each element of `b`
//! was added to *every* position it was broadcast to, so its gradient is the sum of G over those
//! positions: `db = Σ_{broadcast dims} G`. For a bias that is the sum over rows, `db[j] = Σ_r G[r, j]`;
//! for the position embedding it is the sum over the batch.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::map_into;
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

/// Strides of `b` (aligned right) in `a`'s index space: 0 along broadcast dimensions.
fn broadcast_strides(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if b.len() > a.len() {
        return Err(Error::shape("add_broadcast", a, b, "b has more dimensions than a"));
    }
    let off = a.len() - b.len();
    let mut strides = vec![0; a.len()];
    let mut s = 1;
    for i in (0..b.len()).rev() {
        if b[i] == a[off + i] {
            strides[off + i] = if b[i] == 1 { 0 } else { s };
        } else if b[i] != 1 {
            return Err(Error::shape(
                "add_broadcast",
                a,
                b,
                "each dimension of b must be 1 or equal to a's",
            ));
        }
        s *= b[i];
    }
    Ok(strides)
}

/// If `b` broadcasts only over leading dimensions of `a`, the length of the repeated block.
fn leading_broadcast_block(a: &[usize], b: &[usize]) -> Option<usize> {
    let b_trim: Vec<usize> = b.iter().copied().skip_while(|&d| d == 1).collect();
    (a.ends_with(&b_trim)).then(|| numel(&b_trim))
}

/// `a + broadcast(b)` (covers add, add_bias and add_broadcast).
pub fn add_broadcast(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let strides = broadcast_strides(a.shape(), b.shape())?;
    match same_device("add_broadcast", &[a, b])? {
        Device::Cpu => {
            let mut y = Tensor::scratch(a.shape());
            let (ad, bd) = (a.data(), b.data());
            if let Some(block) = leading_broadcast_block(a.shape(), b.shape()) {
                // In runs that do not wrap around the block, so the loop vectorises and pays
                // no division per element (a residual add is a block as long as `a`).
                map_into(y.data_mut(), |off, out| {
                    let (mut i, mut j) = (0, off % block);
                    while i < out.len() {
                        let run = (block - j).min(out.len() - i);
                        let (o, x, r) = (&mut out[i..i + run], &ad[off + i..off + i + run], &bd[j..j + run]);
                        for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
                            *o = x + r;
                        }
                        (i, j) = (i + run, 0);
                    }
                });
            } else {
                let shape = a.shape().to_vec();
                map_into(y.data_mut(), |off, out| {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = ad[off + i] + bd[broadcast_offset(off + i, &shape, &strides)];
                    }
                });
            }
            Ok(y)
        }
        Device::Cuda => Tensor::gpu_output(a.shape(), |dev, y| {
            dev.add_broadcast(a.cuda()?, a.shape(), b.cuda()?, b.shape(), y)
        }),
    }
}

fn broadcast_offset(mut flat: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for d in (0..shape.len()).rev() {
        off += (flat % shape[d]) * strides[d];
        flat /= shape[d];
    }
    off
}

/// Column sums of `g` viewed as rows of length `row_len`: the bias gradient.
pub fn sum_rows(g: &Tensor, row_len: usize) -> Result<Tensor> {
    if row_len == 0 || g.numel() % row_len != 0 {
        return Err(Error::shape(
            "sum_rows",
            g.shape(),
            &[row_len],
            "row length must divide the size",
        ));
    }
    match g.device() {
        Device::Cpu => {
            let rows = g.numel() / row_len;
            // Chunks of rows summed in parallel, then the partial sums added: also keeps f32
            // rounding error growing with the chunk size rather than with all rows.
            let rows_per_chunk = (crate::backend::cpu::PAR_GRAIN / row_len)
                .clamp(1, 256)
                .min(rows.max(1));
            let partials: Vec<Vec<f32>> = g
                .data()
                .par_chunks(row_len * rows_per_chunk)
                .map(|chunk| {
                    let mut acc = vec![0.0f32; row_len];
                    for row in chunk.chunks(row_len) {
                        for (a, &x) in acc.iter_mut().zip(row) {
                            *a += x;
                        }
                    }
                    acc
                })
                .collect();
            let mut out = vec![0.0f32; row_len];
            for p in &partials {
                for (o, &x) in out.iter_mut().zip(p) {
                    *o += x;
                }
            }
            Tensor::from_vec(out, &[row_len])
        }
        Device::Cuda => Tensor::gpu_output(&[row_len], |dev, out| {
            dev.sum_rows(g.cuda()?, out, g.numel() / row_len, row_len)
        }),
    }
}

/// Sum `g` (shaped like `a`) down to `b_shape`: the gradient of a broadcast operand.
pub fn reduce_to_shape(g: &Tensor, b_shape: &[usize]) -> Result<Tensor> {
    let strides = broadcast_strides(g.shape(), b_shape)?;
    if let Some(block) = leading_broadcast_block(g.shape(), b_shape) {
        return sum_rows(g, block)?.reshape(b_shape);
    }
    match g.device() {
        Device::Cpu => {
            let mut out = vec![0.0f32; numel(b_shape)];
            let shape = g.shape().to_vec();
            for (i, &x) in g.data().iter().enumerate() {
                out[broadcast_offset(i, &shape, &strides)] += x;
            }
            Tensor::from_vec(out, b_shape)
        }
        Device::Cuda => Tensor::gpu_output(b_shape, |dev, out| {
            dev.reduce_to_shape(g.cuda()?, g.shape(), out, b_shape)
        }),
    }
}

struct AddBroadcast;

impl Op for AddBroadcast {
    fn name(&self) -> &'static str {
        "add_broadcast"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        add_broadcast(x[0], x[1])
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let da = needs[0].then(|| g.clone());
        let db = if needs[1] {
            Some(if x[1].shape() == g.shape() {
                g.clone()
            } else {
                reduce_to_shape(g, x[1].shape())?
            })
        } else {
            None
        };
        Ok(vec![da, db])
    }
}

impl Graph {
    /// `a + b` for equal shapes (the residual add).
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        if self.shape(a) != self.shape(b) {
            return Err(Error::shape(
                "add",
                self.shape(a),
                self.shape(b),
                "shapes must be equal (use add_broadcast to broadcast)",
            ));
        }
        self.apply(AddBroadcast, &[a, b])
    }
    /// `x[..., j] + b[j]`.
    pub fn add_bias(&mut self, x: Var, b: Var) -> Result<Var> {
        let (xs, bs) = (self.shape(x), self.shape(b));
        if bs.len() != 1 || xs.last() != bs.first() {
            return Err(Error::shape(
                "add_bias",
                xs,
                bs,
                "bias must be 1-D and match the last dimension",
            ));
        }
        self.apply(AddBroadcast, &[x, b])
    }
    /// `a + b` with `b` broadcast to `a`'s shape (numpy rules, result shaped like `a`).
    pub fn add_broadcast(&mut self, a: Var, b: Var) -> Result<Var> {
        self.apply(AddBroadcast, &[a, b])
    }
}
