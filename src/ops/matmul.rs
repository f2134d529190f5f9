//! # Batched matrix multiply
//!
//! ## Forward
//! For each batch index `b` (all leading dimensions, equal for both operands):
//!
//! ```text
//! C[b] = op(A[b]) · op(B[b])        op(X) = X or Xᵀ (the flags ta, tb)
//! op(A): [M, K]   op(B): [K, N]   C: [M, N]
//! C[i, j] = Σ_p op(A)[i, p] · op(B)[p, j]
//! ```
//! Attention uses both transposes: scores = Q·Kᵀ (`tb`), and the backward of a weight uses `ta`.
//!
//! ## Backward
//! With G = dL/dC, the chain rule on `C[i,j] = Σ_p A[i,p] B[p,j]` gives
//! `dL/dA[i,p] = Σ_j G[i,j] B[p,j]`, i.e. `dA = G·Bᵀ`, and likewise `dB = Aᵀ·G`. When an operand
//! enters transposed, its gradient is the transpose of that expression, which is again a single
//! multiply with flags — no transposed copy is ever materialised:
//!
//! ```text
//! ta tb | C       | dA            | dB
//! ------+---------+---------------+---------------
//! -  -  | A·B     | G·Bᵀ  [M,K]   | Aᵀ·G  [K,N]
//! -  T  | A·Bᵀ    | G·B   [M,K]   | Gᵀ·A  [N,K]
//! T  -  | Aᵀ·B    | B·Gᵀ  [K,M]   | A·G   [K,N]
//! T  T  | Aᵀ·Bᵀ   | Bᵀ·Gᵀ [K,M]   | Gᵀ·Aᵀ [N,K]
//! ```
//!
//! The CPU kernel is the packed, cache-blocked GEMM in `backend/cpu/gemm.rs`; with many small
//! matrices (attention heads) the batch is split across threads instead.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::gemm::{gemm, MatRef};
use crate::backend::cuda::{MatmulDims, MatmulKernel};
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// (batch, m, n, k) of `op(A)·op(B)`, or a shape error.
fn dims(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<(Vec<usize>, usize, usize, usize)> {
    let err = |why: &str| Err(Error::shape("matmul", a, b, why));
    if a.len() < 2 || b.len() < 2 {
        return err("both operands need at least 2 dimensions");
    }
    if a.len() != b.len() || a[..a.len() - 2] != b[..b.len() - 2] {
        return err("leading (batch) dimensions must be equal");
    }
    let (ar, ac) = (a[a.len() - 2], a[a.len() - 1]);
    let (br, bc) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, ka) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    if ka != kb {
        return err(&format!("inner dimensions differ: {ka} vs {kb}"));
    }
    Ok((a[..a.len() - 2].to_vec(), m, n, ka))
}

/// `op(A)·op(B)` over equal leading batch dimensions.
pub fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    let (batch_dims, m, n, k) = dims(a.shape(), b.shape(), ta, tb)?;
    let mut shape = batch_dims.clone();
    shape.extend([m, n]);
    let batch: usize = batch_dims.iter().product();
    match same_device("matmul", &[a, b])? {
        Device::Cuda => Tensor::gpu_output(&shape, |dev, c| {
            let d = MatmulDims { batch, m, n, k, ta, tb };
            dev.matmul(MatmulKernel::RegisterTiled, a.cuda()?, b.cuda()?, c, d, 0.0)
        }),
        Device::Cpu => {
            let mut c = Tensor::scratch(&shape);
            cpu_batched(a.data(), b.data(), c.data_mut(), batch, m, n, k, ta, tb);
            Ok(c)
        }
    }
}

/// CPU: `batch` independent products, each `[m,k]·[k,n]` after the transposes.
#[allow(clippy::too_many_arguments)]
pub fn cpu_batched(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
) {
    let (sa, sb, sc) = (m * k, k * n, m * n);
    let one = |i: usize, ci: &mut [f32], parallel: bool| {
        let am = MatRef::new(&a[i * sa..(i + 1) * sa], if ta { m } else { k }, ta);
        let bm = MatRef::new(&b[i * sb..(i + 1) * sb], if tb { k } else { n }, tb);
        gemm(m, n, k, am, bm, ci, n, false, parallel);
    };
    if sc == 0 {
        return;
    }
    if batch >= 2 * rayon::current_num_threads() {
        // Many small products (attention heads): one thread per product.
        c.par_chunks_mut(sc).enumerate().for_each(|(i, ci)| one(i, ci, false));
    } else {
        c.chunks_mut(sc).enumerate().for_each(|(i, ci)| one(i, ci, true));
    }
}

struct MatMul {
    ta: bool,
    tb: bool,
}

impl Op for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        matmul(x[0], x[1], self.ta, self.tb)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (x[0], x[1]);
        let da = if needs[0] {
            Some(match (self.ta, self.tb) {
                (false, false) => matmul(g, b, false, true)?,
                (false, true) => matmul(g, b, false, false)?,
                (true, false) => matmul(b, g, false, true)?,
                (true, true) => matmul(b, g, true, true)?,
            })
        } else {
            None
        };
        let db = if needs[1] {
            Some(match (self.ta, self.tb) {
                (false, false) => matmul(a, g, true, false)?,
                (false, true) => matmul(g, a, true, false)?,
                (true, false) => matmul(a, g, false, false)?,
                (true, true) => matmul(g, a, true, true)?,
            })
        } else {
            None
        };
        Ok(vec![da, db])
    }
}

impl Graph {
    /// `op(a)·op(b)` over equal batch dimensions (see the module doc).
    pub fn matmul_t(&mut self, a: Var, b: Var, ta: bool, tb: bool) -> Result<Var> {
        self.apply(MatMul { ta, tb }, &[a, b])
    }
    /// `a·b`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.matmul_t(a, b, false, false)
    }
}
