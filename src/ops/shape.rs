//! # Shape ops: reshape, permute / transpose, broadcast_to
//!
//! ## reshape
//! Forward: the same elements in the same row-major order under a new shape of equal size (no
//! copy). Backward: the gradient reshaped back, `dx = reshape(G, shape(x))`.
//!
//! ## permute
//! Forward: `y[i_0, ..., i_{n-1}] = x[j]` where `j[perm[d]] = i_d`, i.e. output dimension `d` is
//! input dimension `perm[d]`. Splitting attention heads is `[B, T, H, Dh] → [B, H, T, Dh]`,
//! `perm = [0, 2, 1, 3]`. Backward: a permutation only moves elements, so the gradient moves back
//! with the inverse permutation: `dx = permute(G, perm⁻¹)` where `perm⁻¹[perm[d]] = d`.
//!
//! ## broadcast_to
//! Forward: repeat `x` along dimensions of size 1 (and new leading ones) to reach `shape`, e.g. the
//! class token `[1, 1, D] → [B, 1, D]`. Backward: each input element was copied to many outputs,
//! so its gradient is the sum of theirs: `dx = Σ_{broadcast dims} G` (as for `add_broadcast`).

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::for_each_row;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::add::{add_broadcast, reduce_to_shape};
use crate::tensor::Tensor;

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn check_perm(shape: &[usize], perm: &[usize]) -> Result<()> {
    let mut seen = vec![false; shape.len()];
    let ok = perm.len() == shape.len()
        && perm
            .iter()
            .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if ok {
        Ok(())
    } else {
        Err(Error::shape(
            "permute",
            shape,
            perm,
            "perm must be a permutation of the dimensions",
        ))
    }
}

/// Move dimensions: output dimension `d` is input dimension `perm[d]` (copies).
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    check_perm(x.shape(), perm)?;
    let in_strides = contiguous_strides(x.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    match x.device() {
        Device::Cuda => Tensor::gpu_output(&out_shape, |dev, y| {
            if out_shape.is_empty() || x.numel() == 0 {
                dev.copy_rows(x.cuda()?, y, 1, x.numel(), 0, 0, 0, 0) // a scalar: nothing to move
            } else {
                dev.permute(x.cuda()?, y, x.shape(), perm)
            }
        }),
        Device::Cpu => {
            let mut y = Tensor::scratch(&out_shape);
            if out_shape.is_empty() || y.numel() == 0 {
                y.data_mut().copy_from_slice(x.data());
                return Ok(y);
            }
            let r = out_shape.len();
            let (row_len, inner) = (out_shape[r - 1], src_strides[r - 1]);
            let xd = x.data();
            for_each_row(y.data_mut(), row_len, |row_idx, out| {
                // Offset of this output row's first element in x.
                let (mut rem, mut base) = (row_idx, 0);
                for d in (0..r - 1).rev() {
                    base += (rem % out_shape[d]) * src_strides[d];
                    rem /= out_shape[d];
                }
                for (j, o) in out.iter_mut().enumerate() {
                    *o = xd[base + j * inner];
                }
            });
            Ok(y)
        }
    }
}

struct Permute(Vec<usize>);

impl Op for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        permute(x[0], &self.0)
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.0.len()];
        for (d, &p) in self.0.iter().enumerate() {
            inv[p] = d;
        }
        Ok(vec![Some(permute(g, &inv)?)])
    }
}

struct Reshape(Vec<usize>);

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].reshape(&self.0)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(x[0].shape())?)])
    }
}

struct BroadcastTo(Vec<usize>);

impl Op for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        // Broadcasting onto zeros reuses add_broadcast's kernel and its shape checks.
        add_broadcast(&Tensor::zeros_on(&self.0, x[0].device())?, x[0])
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(reduce_to_shape(g, x[0].shape())?)])
    }
}

impl Graph {
    /// The same elements under another shape.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        self.value(x).reshape(shape)?; // check before recording
        self.apply(Reshape(shape.to_vec()), &[x])
    }
    /// Output dimension `d` is input dimension `perm[d]`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        self.apply(Permute(perm.to_vec()), &[x])
    }
    /// Swap two dimensions.
    pub fn transpose(&mut self, x: Var, d0: usize, d1: usize) -> Result<Var> {
        let r = self.shape(x).len();
        if d0 >= r || d1 >= r {
            return Err(Error::shape(
                "transpose",
                self.shape(x),
                &[d0, d1],
                "dimension out of range",
            ));
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(d0, d1);
        self.permute(x, &perm)
    }
    /// Repeat `x` along its size-1 (and new leading) dimensions up to `shape`.
    pub fn broadcast_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let xs = self.shape(x);
        let fits = xs.len() <= shape.len() && xs.iter().rev().zip(shape.iter().rev()).all(|(&a, &b)| a == b || a == 1);
        if !fits {
            return Err(Error::shape(
                "broadcast_to",
                xs,
                shape,
                "each dimension must be 1 or equal to the target's",
            ));
        }
        self.apply(BroadcastTo(shape.to_vec()), &[x])
    }
}
