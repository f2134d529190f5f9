//! A buffer pool for the CPU backend.
//!
//! Why: a training step allocates the same large activations every step (the seed preset's
//! feed-forward tensor alone is 512x50x2048 f32 = 210 MB). The system allocator returns such blocks
//! to the kernel on free, so every step pays for the kernel zeroing fresh pages again. Keeping the
//! freed buffers, keyed by exact length, makes the steady-state step allocation-free.
//!
//! Buffers taken with [`take`] hold stale values: the caller must overwrite every element.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers smaller than this are not pooled: the allocator handles them well.
const MIN_POOLED_LEN: usize = 1 << 12;
/// Upper bound on the bytes the pool keeps idle; beyond it freed buffers go back to the system.
const MAX_IDLE_BYTES: usize = 6 << 30;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    idle_bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        idle_bytes: 0,
    });
    f(pool)
}

/// A buffer of `len` floats whose contents are unspecified (recycled or zero).
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED_LEN {
        let reused = with_pool(|p| {
            let v = p.free.get_mut(&len).and_then(|list| list.pop());
            if v.is_some() {
                p.idle_bytes -= len * 4;
            }
            v
        });
        if let Some(v) = reused {
            return v;
        }
    }
    vec![0.0; len]
}

/// A buffer of `len` zeros.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Return a buffer to the pool (or to the system when it is small or the pool is full).
pub fn give(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_POOLED_LEN || v.capacity() != len {
        return;
    }
    with_pool(|p| {
        if p.idle_bytes + len * 4 <= MAX_IDLE_BYTES {
            p.idle_bytes += len * 4;
            p.free.entry(len).or_default().push(v);
        }
    });
}

/// Release every idle buffer (for example between training and a large evaluation).
pub fn clear() {
    with_pool(|p| {
        p.free.clear();
        p.idle_bytes = 0;
    });
}
