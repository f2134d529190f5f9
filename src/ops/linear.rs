//! # Linear layer (fused matmul + bias)
//!
//! ## Forward
//! PyTorch's layout: the weight is `[out, in]`, so a checkpoint's `*.weight` loads unchanged.
//!
//! ```text
//! x: [..., in]  → flattened to X: [R, in]   (R = product of the leading dims)
//! W: [out, in]  b: [out]
//! Y = X·Wᵀ + b  : [R, out]   → reshaped to [..., out]
//! ```
//! The CPU kernel adds `b` as it stores each tile of X·Wᵀ, so the bias costs no extra pass over Y.
//!
//! ## Backward
//! From `Y[r,o] = Σ_i X[r,i] W[o,i] + b[o]`, with G = dL/dY `[R, out]`:
//! ```text
//! dX = G·W        [R,out]·[out,in] = [R,in]
//! dW = Gᵀ·X       [out,R]·[R,in]   = [out,in]
//! db = Σ_r G[r,:] [out]            (b was added to every row, so its gradient sums the rows)
//! ```
//! It must equal `matmul(x, Wᵀ)` followed by `add_bias`; a test checks exactly that, and the
//! gradient check covers its backward (a fused op without a tested backward is a silent bug).

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::gemm::{gemm, gemm_bias, MatRef};
use crate::backend::cuda::{CudaBuffer, CudaDevice};
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::ops::add::sum_rows;
use crate::tensor::Tensor;

fn check(x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize, usize)> {
    if w.len() != 2 || x.is_empty() || x[x.len() - 1] != w[1] {
        return Err(Error::shape("linear", x, w, "need x [..., in] and weight [out, in]"));
    }
    if let Some(b) = b {
        if b != [w[0]] {
            return Err(Error::shape("linear", w, b, "bias must be [out]"));
        }
    }
    let rows = x[..x.len() - 1].iter().product();
    Ok((rows, w[1], w[0]))
}

/// `x·Wᵀ + b`.
pub fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (rows, din, dout) = check(x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = dout;
    let mut all = vec![x, w];
    all.extend(b);
    match same_device("linear", &all)? {
        Device::Cuda => Tensor::gpu_output(&shape, |dev, y| {
            let bias: Option<&CudaBuffer> = b.map(|b| b.cuda()).transpose()?;
            dev.linear_fwd(x.cuda()?, w.cuda()?, bias, y, rows, din, dout)
        }),
        Device::Cpu => {
            let mut y = Tensor::scratch(&shape);
            let (xm, wm) = (MatRef::new(x.data(), din, false), MatRef::new(w.data(), din, true));
            match b {
                Some(b) => gemm_bias(rows, dout, din, xm, wm, b.data(), y.data_mut(), dout, true),
                None => gemm(rows, dout, din, xm, wm, y.data_mut(), dout, false, true),
            }
            Ok(y)
        }
    }
}

/// `(dX, dW, db)` of the linear layer, each only when asked for.
pub fn backward(g: &Tensor, x: &Tensor, w: &Tensor, needs: [bool; 3]) -> Result<[Option<Tensor>; 3]> {
    let (rows, din, dout) = check(x.shape(), w.shape(), None)?;
    if g.numel() != rows * dout || g.shape().last() != Some(&dout) {
        return Err(Error::shape(
            "linear backward",
            g.shape(),
            &[rows, dout],
            "the gradient must be [..., out]",
        ));
    }
    match same_device("linear backward", &[g, x, w])? {
        Device::Cuda => {
            let dev = CudaDevice::global()?;
            let alloc = |need: bool, n: usize| need.then(|| dev.alloc(n)).transpose();
            let (mut dx, mut dw, mut db) = (
                alloc(needs[0], rows * din)?,
                alloc(needs[1], dout * din)?,
                alloc(needs[2], dout)?,
            );
            dev.linear_bwd(
                g.cuda()?,
                x.cuda()?,
                w.cuda()?,
                dx.as_mut(),
                dw.as_mut(),
                db.as_mut(),
                rows,
                din,
                dout,
            )?;
            let wrap = |buf: Option<CudaBuffer>, shape: &[usize]| buf.map(|b| Tensor::from_cuda(b, shape)).transpose();
            Ok([wrap(dx, x.shape())?, wrap(dw, w.shape())?, wrap(db, &[dout])?])
        }
        Device::Cpu => {
            let dx = if needs[0] {
                let mut dx = Tensor::scratch(x.shape());
                gemm(
                    rows,
                    din,
                    dout,
                    MatRef::new(g.data(), dout, false),
                    MatRef::new(w.data(), din, false),
                    dx.data_mut(),
                    din,
                    false,
                    true,
                );
                Some(dx)
            } else {
                None
            };
            let dw = if needs[1] {
                let mut dw = Tensor::scratch(w.shape());
                gemm(
                    dout,
                    din,
                    rows,
                    MatRef::new(g.data(), dout, true),
                    MatRef::new(x.data(), din, false),
                    dw.data_mut(),
                    din,
                    false,
                    true,
                );
                Some(dw)
            } else {
                None
            };
            let db = if needs[2] { Some(sum_rows(g, dout)?) } else { None };
            Ok([dx, dw, db])
        }
    }
}

struct Linear;

impl Op for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        forward(x[0], x[1], x.get(2).copied())
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let [dx, dw, db] = backward(g, x[0], x[1], [needs[0], needs[1], needs.get(2) == Some(&true)])?;
        let mut out = vec![dx, dw];
        if x.len() == 3 {
            out.push(db);
        }
        Ok(out)
    }
}

impl Graph {
    /// `x·Wᵀ + b` with a PyTorch-layout weight `[out, in]`; `b` may be omitted.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        match b {
            Some(b) => self.apply(Linear, &[x, w, b]),
            None => self.apply(Linear, &[x, w]),
        }
    }
}
