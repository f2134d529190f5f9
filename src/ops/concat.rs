//! # Concatenate along an axis, slice, and select one index
//!
//! ## concat
//! Forward: inputs with equal shapes except along `axis` are laid end to end along it. The class
//! token joins the patch tokens this way: `[B, 1, D] ++ [B, N, D] → [B, N+1, D]` (axis 1).
//! Backward: each output element came from exactly one input element, so each input's gradient is
//! its own slice of G: `dx_k = G[..., off_k .. off_k + n_k, ...]`.
//!
//! ## select
//! Forward: `y = x[..., index, ...]` along `axis`, which disappears from the shape. The ViT head
//! reads the class token with `select(x, axis 1, index 0)`: `[B, T, D] → [B, D]`; attention splits
//! q, k, v with `select(qkv, axis 0, i)`.
//! Backward: the selected positions get G, all others got no use and get 0:
//! `dx = zeros(shape(x)); dx[..., index, ...] = G`.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cuda::{CudaDevice, DevicePtr};
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// (outer, axis length, inner) of a shape around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Lay `xs` end to end along `axis`.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::config("concat of no tensors"))?;
    if axis >= first.rank() {
        return Err(Error::shape("concat", first.shape(), &[axis], "axis out of range"));
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for x in xs {
        let ok = x.rank() == first.rank()
            && x.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !ok {
            return Err(Error::shape(
                "concat",
                first.shape(),
                x.shape(),
                format!("shapes must match except along axis {axis}"),
            ));
        }
        shape[axis] += x.shape()[axis];
    }
    match same_device("concat", xs)? {
        Device::Cuda => {
            let dev = CudaDevice::global()?;
            let mut y = dev.alloc(crate::tensor::numel(&shape))?;
            let parts = xs
                .iter()
                .map(|x| Ok((x.cuda()? as &dyn DevicePtr<f32>, x.shape())))
                .collect::<Result<Vec<_>>>()?;
            dev.concat(&parts, &mut y, axis)?;
            Tensor::from_cuda(y, &shape)
        }
        Device::Cpu => {
            let (outer, total, inner) = split(&shape, axis);
            let mut y = Tensor::scratch(&shape);
            if y.numel() == 0 {
                return Ok(y);
            }
            y.data_mut()
                .par_chunks_mut(total * inner)
                .enumerate()
                .for_each(|(o, out)| {
                    let mut off = 0;
                    for x in xs {
                        let n = x.shape()[axis] * inner;
                        out[off..off + n].copy_from_slice(&x.data()[o * n..(o + 1) * n]);
                        off += n;
                    }
                });
            debug_assert_eq!(outer * total * inner, y.numel());
            Ok(y)
        }
    }
}

/// `x[..., start..start+len, ...]` along `axis` (keeps the axis).
pub fn slice(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    if axis >= x.rank() || start + len > x.shape()[axis] {
        return Err(Error::shape(
            "slice",
            x.shape(),
            &[axis, start, len],
            "slice out of range",
        ));
    }
    let (_, n, inner) = split(x.shape(), axis);
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    match x.device() {
        Device::Cuda => Tensor::gpu_output(&shape, |dev, y| dev.slice(x.cuda()?, y, x.shape(), axis, start, len)),
        Device::Cpu => {
            let mut y = Tensor::scratch(&shape);
            if len * inner > 0 {
                let xd = x.data();
                y.data_mut()
                    .par_chunks_mut(len * inner)
                    .enumerate()
                    .for_each(|(o, out)| {
                        let src = o * n * inner + start * inner;
                        out.copy_from_slice(&xd[src..src + len * inner]);
                    });
            }
            Ok(y)
        }
    }
}

/// Zeros of `full` shape with `g` written at `start..` along `axis` (the inverse of [`slice`]).
pub fn unslice(g: &Tensor, full: &[usize], axis: usize, start: usize) -> Result<Tensor> {
    let (_, n, inner) = split(full, axis);
    let len = g.shape()[axis];
    match g.device() {
        Device::Cuda => Tensor::gpu_output(full, |dev, y| dev.unslice(g.cuda()?, y, full, axis, start, len)),
        Device::Cpu => {
            let mut y = Tensor::zeros(full);
            if y.numel() == 0 || len * inner == 0 {
                return Ok(y);
            }
            let gd = g.data();
            y.data_mut().par_chunks_mut(n * inner).enumerate().for_each(|(o, out)| {
                out[start * inner..(start + len) * inner].copy_from_slice(&gd[o * len * inner..(o + 1) * len * inner]);
            });
            Ok(y)
        }
    }
}

struct Concat(usize);

impl Op for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        concat(x, self.0)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let mut off = 0;
        let mut out = Vec::with_capacity(x.len());
        for (xi, &need) in x.iter().zip(needs) {
            let n = xi.shape()[self.0];
            out.push(if need { Some(slice(g, self.0, off, n)?) } else { None });
            off += n;
        }
        Ok(out)
    }
}

struct Select {
    axis: usize,
    index: usize,
}

impl Op for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let y = slice(x[0], self.axis, self.index, 1)?;
        let mut shape = x[0].shape().to_vec();
        shape.remove(self.axis);
        y.reshape(&shape)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let mut kept = x[0].shape().to_vec();
        kept[self.axis] = 1;
        Ok(vec![Some(unslice(
            &g.reshape(&kept)?,
            x[0].shape(),
            self.axis,
            self.index,
        )?)])
    }
}

impl Graph {
    /// Concatenate along `axis`.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Result<Var> {
        self.apply(Concat(axis), xs)
    }
    /// `x[..., index, ...]` along `axis`, removing that axis.
    pub fn select(&mut self, x: Var, axis: usize, index: usize) -> Result<Var> {
        let s = self.shape(x);
        if axis >= s.len() || index >= s[axis] {
            return Err(Error::shape("select", s, &[axis, index], "axis or index out of range"));
        }
        self.apply(Select { axis, index }, &[x])
    }
}
