//! The CPU backend: rayon-parallel kernels live beside each op in `src/ops/`; this module holds
//! what they share — the buffer type, the buffer pool and the parallel-loop helpers.

pub mod fastmath;
pub mod gemm;
pub mod pool;

use rayon::prelude::*;

/// A CPU buffer of f32 that returns its memory to the [`pool`] when dropped.
#[derive(Debug)]
pub struct CpuBuffer(Vec<f32>);

impl CpuBuffer {
    pub fn new(v: Vec<f32>) -> Self {
        CpuBuffer(v)
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.0
    }
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Clone for CpuBuffer {
    fn clone(&self) -> Self {
        let mut v = pool::take(self.0.len());
        v.copy_from_slice(&self.0);
        CpuBuffer(v)
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.0));
    }
}

/// Rows of work smaller than this many elements are not worth a rayon task.
pub const PAR_GRAIN: usize = 1 << 14;

/// Run `f(row_index, out_row)` over the rows of `out` (each `row_len` long), in parallel when the
/// work is large enough to pay for it.
pub fn for_each_row(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if row_len == 0 {
        return;
    }
    if out.len() >= PAR_GRAIN {
        let rows_per_task = (PAR_GRAIN / row_len).max(1);
        out.par_chunks_mut(row_len * rows_per_task)
            .enumerate()
            .for_each(|(chunk, rows)| {
                for (i, row) in rows.chunks_mut(row_len).enumerate() {
                    f(chunk * rows_per_task + i, row);
                }
            });
    } else {
        for (i, row) in out.chunks_mut(row_len).enumerate() {
            f(i, row);
        }
    }
}

/// Element-wise `out[i] = f(i-th element)` over equally long slices, parallel in blocks.
pub fn map_into(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    // `f` gets the offset of a block and the block: it can read its inputs at the same offsets.
    out.par_chunks_mut(PAR_GRAIN)
        .enumerate()
        .for_each(|(b, chunk)| f(b * PAR_GRAIN, chunk));
}
