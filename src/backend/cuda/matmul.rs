//! The launch wrappers of `kernels/matmul.cu`: the batched matrix product (two kernels, the
//! teaching 16×16 tile and the fast 64×64 register tile) and the linear layer built on it.

use super::device::{CudaBuffer, CudaDevice};
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};

/// Which matmul kernel (both compute the same product; see matmul.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// 16×16 shared-memory tiles, one output per thread (the teaching version).
    Tiled,
    /// 64×64 tiles, a 4×4 register tile per thread (the fast version; the default).
    RegisterTiled,
}

/// The sizes of a batched `C[z] = op(A[z])·op(B[z]) (+ beta·C[z])`, as in `ops::matmul`:
/// `op(A)` is `[m, k]` (A stored `[k, m]` when `ta`), `op(B)` is `[k, n]` (B stored `[n, k]` when
/// `tb`), C is `[m, n]`, all contiguous, `batch` of each laid end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
}

impl MatmulDims {
    /// One product (`batch = 1`).
    pub fn single(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> MatmulDims {
        MatmulDims {
            batch: 1,
            m,
            n,
            k,
            ta,
            tb,
        }
    }
}

impl CudaDevice {
    /// `C[z] = op(A[z])·op(B[z]) + beta·C[z]` for every batch index (beta = 0: C is only written).
    pub fn matmul(
        &self,
        kernel: MatmulKernel,
        a: &(impl DevicePtr<f32> + ?Sized),
        b: &(impl DevicePtr<f32> + ?Sized),
        c: &mut (impl DevicePtrMut<f32> + ?Sized),
        d: MatmulDims,
        beta: f32,
    ) -> Result<()> {
        let MatmulDims { batch, m, n, k, ta, tb } = d;
        let op = "matmul";
        let (sza, szb, szc) = (m * k, k * n, m * n);
        for (what, sz) in [("A", sza), ("B", szb), ("C", szc)] {
            if sz > i32::MAX as usize {
                return Err(Error::Device(format!(
                    "{op}: one {what} matrix has {sz} elements; the kernels index a matrix with 32 bits"
                )));
            }
        }
        let pa = self.ptr_in(op, "a", a, batch * sza)?;
        let pb = self.ptr_in(op, "b", b, batch * szb)?;
        let pc = self.ptr_out(op, "c", c, batch * szc)?;
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        // op(A)[i, p] = A[i·sa_i + p·sa_p], op(B)[p, j] = B[p·sb_p + j·sb_j] (see matmul.cu).
        let (sa_i, sa_p) = if ta { (1, m) } else { (k, 1) };
        let (sb_p, sb_j) = if tb { (1, k) } else { (n, 1) };
        let (name, tile, block) = match kernel {
            MatmulKernel::Tiled => ("matmul_tiled", 16usize, (16u32, 16u32, 1u32)),
            MatmulKernel::RegisterTiled => ("matmul_reg", 64usize, (256u32, 1u32, 1u32)),
        };
        let max_yz = self.max_grid_yz() as usize;
        let tiles_n = n.div_ceil(tile);
        let rows_per_launch = max_yz * tile;
        // Split batches beyond gridDim.z and rows beyond gridDim.y into launches on offset pointers.
        let mut z0 = 0;
        while z0 < batch {
            let zb = (batch - z0).min(max_yz);
            let mut i0 = 0;
            while i0 < m {
                let mi = (m - i0).min(rows_per_launch);
                let off_a = (z0 * sza + i0 * sa_i) as u64 * 4;
                let off_c = (z0 * szc + i0 * n) as u64 * 4;
                let off_b = (z0 * szb) as u64 * 4;
                let cfg = LaunchConfig {
                    grid_dim: (tiles_n as u32, mi.div_ceil(tile) as u32, zb as u32),
                    block_dim: block,
                    shared_mem_bytes: 0,
                };
                // Every size below is at most a matrix's element count, checked above.
                self.args(op)
                    .ptr(pa + off_a)
                    .ptr(pb + off_b)
                    .ptr(pc + off_c)
                    .int("m", mi)
                    .int("n", n)
                    .int("k", k)
                    .int("sa_i", sa_i)
                    .int("sa_p", sa_p)
                    .int("sb_p", sb_p)
                    .int("sb_j", sb_j)
                    .size(sza)
                    .size(szb)
                    .size(szc)
                    .arg(beta)
                    .launch(name, cfg)?;
                i0 += mi;
            }
            z0 += zb;
        }
        Ok(())
    }

    /// The linear layer `y = x·Wᵀ + b` (`x: [rows, din]`, `W: [dout, din]`, `b: [dout]`), as
    /// `ops::linear::forward`: the bias is written into every row, then the product accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        w: &(impl DevicePtr<f32> + ?Sized),
        b: Option<&(impl DevicePtr<f32> + ?Sized)>,
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        din: usize,
        dout: usize,
    ) -> Result<()> {
        let beta = match b {
            Some(b) => {
                // src stride 0: every row of y reads the same bias row.
                self.copy_rows(b, y, rows, dout, 0, 0, dout, 0)?;
                1.0
            }
            None => 0.0,
        };
        let d = MatmulDims::single(rows, dout, din, false, true);
        self.matmul(MatmulKernel::RegisterTiled, x, w, y, d, beta)
    }

    /// The linear layer's backward, as `ops::linear::backward`: `dX = G·W`, `dW = Gᵀ·X`,
    /// `db = Σ_rows G`, each only when its output is given.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        w: &(impl DevicePtr<f32> + ?Sized),
        dx: Option<&mut CudaBuffer>,
        dw: Option<&mut CudaBuffer>,
        db: Option<&mut CudaBuffer>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> Result<()> {
        if let Some(dx) = dx {
            let d = MatmulDims::single(rows, din, dout, false, false);
            self.matmul(MatmulKernel::RegisterTiled, g, w, dx, d, 0.0)?;
        }
        if let Some(dw) = dw {
            let d = MatmulDims::single(dout, din, rows, true, false);
            self.matmul(MatmulKernel::RegisterTiled, g, x, dw, d, 0.0)?;
        }
        if let Some(db) = db {
            self.sum_rows(g, db, rows, dout)?;
        }
        Ok(())
    }
}
