//! What vitcore asks of the cudasim simulator beyond the CUDA driver API: its launch counters
//! (for `vitcore bench kernels --device cuda`, which prints them instead of times there), and
//! marking a recycled buffer as never written (so initcheck sees through the caching allocator).
//!
//! These are cudasim's own entry points in its `libcuda.so` (`cudasimCountersReset`,
//! `cudasimCounterCount`, `cudasimCounterName`, `cudasimCountersRead`,
//! `cudasimMarkUninitialized`; `cudasim/src/driver.rs`). They are looked up in the library cudarc
//! already loaded; on a real driver they do not exist and [`hooks`] is `None`.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_uint, CStr};
use std::sync::OnceLock;

type ResetFn = unsafe extern "C" fn() -> c_uint;
type CountFn = unsafe extern "C" fn() -> c_uint;
type NameFn = unsafe extern "C" fn(c_uint) -> *const c_char;
type ReadFn = unsafe extern "C" fn(*mut u64, c_uint) -> c_uint;
type MarkFn = unsafe extern "C" fn(u64, usize) -> c_uint;
type MainFn = unsafe extern "C" fn(*mut c_uint, *mut c_uint) -> *const c_char;

/// The simulator's entry points.
pub struct SimHooks {
    _lib: libloading::Library,
    reset: ResetFn,
    names: Vec<String>,
    read: ReadFn,
    mark: MarkFn,
    main: MainFn,
}

impl SimHooks {
    fn open() -> Option<SimHooks> {
        // The same name resolution as cudarc's: the library it loaded (already in the process, so
        // this only adds a reference).
        let lib = ["libcuda.so", "libcuda.so.1"]
            .iter()
            .find_map(|&n| unsafe { libloading::Library::new(n) }.ok())?;
        unsafe {
            let reset = *lib.get::<ResetFn>(b"cudasimCountersReset\0").ok()?;
            let count = *lib.get::<CountFn>(b"cudasimCounterCount\0").ok()?;
            let name = *lib.get::<NameFn>(b"cudasimCounterName\0").ok()?;
            let read = *lib.get::<ReadFn>(b"cudasimCountersRead\0").ok()?;
            let mark = *lib.get::<MarkFn>(b"cudasimMarkUninitialized\0").ok()?;
            let main = *lib.get::<MainFn>(b"cudasimMainKernel\0").ok()?;
            let names = (0..count())
                .map(|i| {
                    let p = name(i);
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                })
                .collect();
            Some(SimHooks {
                _lib: lib,
                reset,
                names,
                read,
                mark,
                main,
            })
        }
    }

    /// Start counting from zero.
    pub fn reset(&self) {
        unsafe { (self.reset)() };
    }

    /// The counters summed over the launches since the last [`SimHooks::reset`], by name
    /// (`warp_instructions`, `global_load_sectors`, `shared_load_wavefronts`, ...).
    pub fn read(&self) -> Counters {
        let mut v = vec![0u64; self.names.len()];
        let n = unsafe { (self.read)(v.as_mut_ptr(), v.len() as c_uint) } as usize;
        Counters(self.names.iter().cloned().zip(v.into_iter().take(n)).collect())
    }

    /// The kernel that ran the most warp instructions since the reset: `(name, threads per
    /// block, dynamic shared bytes)` of its last launch.
    pub fn main_kernel(&self) -> Option<(String, u32, u32)> {
        let (mut threads, mut shared) = (0, 0);
        let p = unsafe { (self.main)(&mut threads, &mut shared) };
        if p.is_null() {
            return None;
        }
        let name = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        Some((name, threads, shared))
    }

    /// Tell the simulator `bytes` at `ptr` hold no data (a buffer handed out again).
    pub fn mark_uninitialized(&self, ptr: u64, bytes: usize) {
        unsafe { (self.mark)(ptr, bytes) };
    }
}

/// The simulator's entry points, when the driver is cudasim (looked up once per process).
pub fn hooks() -> Option<&'static SimHooks> {
    static HOOKS: OnceLock<Option<SimHooks>> = OnceLock::new();
    HOOKS.get_or_init(SimHooks::open).as_ref()
}

/// Counter values by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// A counter's value (0 if this simulator does not have it).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `ideal / actual` as a fraction, or `None` when nothing was counted.
    fn efficiency(&self, ideal: &str, actual: &str) -> Option<f64> {
        let a = self.get(actual);
        (a > 0).then(|| self.get(ideal) as f64 / a as f64)
    }

    /// Coalescing efficiency of the global loads: the fewest 32-byte sectors that could carry
    /// the bytes used, over the sectors touched (Nsight Compute's "sectors per request" against
    /// the ideal).
    pub fn load_efficiency(&self) -> Option<f64> {
        self.efficiency("global_load_ideal_sectors", "global_load_sectors")
    }

    /// Coalescing efficiency of the global stores.
    pub fn store_efficiency(&self) -> Option<f64> {
        self.efficiency("global_store_ideal_sectors", "global_store_sectors")
    }

    /// Shared-memory bank conflicts: wavefronts beyond the fewest possible, per shared request.
    pub fn bank_conflicts_per_request(&self) -> Option<f64> {
        let req = self.get("shared_load_requests") + self.get("shared_store_requests");
        let waves = self.get("shared_load_wavefronts") + self.get("shared_store_wavefronts");
        let ideal = self.get("shared_load_ideal_wavefronts") + self.get("shared_store_ideal_wavefronts");
        (req > 0).then(|| waves.saturating_sub(ideal) as f64 / req as f64)
    }

    /// DRAM traffic as the simulator counts it: every sector touched, 32 bytes each (no cache
    /// between: an upper bound for a GPU whose L2 holds reused data).
    pub fn sector_bytes(&self) -> u64 {
        32 * (self.get("global_load_sectors") + self.get("global_store_sectors"))
    }
}

/// What limits how many blocks of a kernel an SM holds at once (NVIDIA's CUDA Occupancy
/// Calculator, simplified: registers allocated per warp in units of 256, shared memory in units
/// of 256 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmLimits {
    pub max_threads: u32,
    pub max_blocks: u32,
    pub registers: u32,
    pub shared_bytes: u32,
}

/// Theoretical occupancy: resident warps per SM over the most an SM can hold, for a kernel of
/// `regs` registers per thread and `shared` bytes of shared memory per block, launched with
/// `threads` per block. 0 when a block does not fit at all.
pub fn occupancy(limits: SmLimits, threads: u32, regs: u32, shared: u32) -> f64 {
    if threads == 0 {
        return 0.0;
    }
    let warps = threads.div_ceil(32);
    let regs_per_warp = (regs.max(1) * 32).next_multiple_of(256);
    let by_regs = (limits.registers / regs_per_warp) / warps;
    let by_shared = if shared == 0 {
        u32::MAX
    } else {
        limits.shared_bytes / shared.next_multiple_of(256)
    };
    let by_threads = limits.max_threads / threads;
    let blocks = by_regs.min(by_shared).min(by_threads).min(limits.max_blocks);
    (blocks * warps) as f64 / (limits.max_threads / 32) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_the_binding_limit() {
        // A T4 SM: 1024 threads, 16 blocks, 64 K registers, 64 KB shared memory.
        let t4 = SmLimits {
            max_threads: 1024,
            max_blocks: 16,
            registers: 65536,
            shared_bytes: 65536,
        };
        // 256 threads at 32 registers: threads bind (4 blocks, every warp slot).
        assert_eq!(occupancy(t4, 256, 32, 0), 1.0);
        // matmul_reg: 256 threads, 75 registers (80 allocated per thread: 2560 per warp), 8.5 KB:
        // 65536 / 2560 = 25 warps = 3 blocks of 8 → 24 of 32 warps.
        assert_eq!(occupancy(t4, 256, 75, 8704), 0.75);
        // Shared memory binds: 40 KB per block, one block of 4 warps.
        assert_eq!(occupancy(t4, 128, 16, 40 * 1024), 4.0 / 32.0);
        assert_eq!(occupancy(t4, 128, 16, 80 * 1024), 0.0);
    }
}
