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

/// Run `f` on a thread of rayon's global pool and return its result.
///
/// Why: a parallel loop started from a thread outside the pool (the process's main thread) is
/// handed to the pool's workers, and the caller sleeps until they finish: two context switches
/// per op, a few hundred per training step. Started from a worker, the loop's first half runs
/// right there and the other worker steals the rest. Measured on the 2-vCPU build machine
/// (`bench step --preset default`, BENCHMARKS.md round 4): 1.17× faster a step.
///
/// The workers get the main thread's 8 MiB of stack rather than the 2 MiB default, so no code
/// path has less stack than it had on the main thread. With a pool of one thread (one CPU, or
/// `RAYON_NUM_THREADS=1`) `f` runs on the calling thread instead: a batch loader dropped
/// mid-epoch is joined, and its thread's parallel loop needs a free worker to finish (waiting
/// for a batch is not the hazard: the loader's `receive` runs pool jobs while it waits).
pub fn on_worker_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error only means the global pool exists already (a second call, or a test harness):
    // then that pool serves.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .thread_name(|i| format!("vitcore-worker-{i}"))
        .build_global();
    if rayon::current_num_threads() < 2 {
        return f();
    }
    rayon::scope(|_| f())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_worker_pool_runs_on_a_pool_thread_and_returns_its_result() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is not a worker");
        if rayon::current_num_threads() < 2 {
            return; // one thread: `f` runs here by design (see the docs)
        }
        let (index, sum) = on_worker_pool(|| {
            let v: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
            (
                rayon::current_thread_index(),
                v.par_iter().map(|&x| x as f64).sum::<f64>(),
            )
        });
        assert!(index.is_some(), "f ran outside the pool");
        assert_eq!(sum, 4_999_950_000.0);
    }
}
