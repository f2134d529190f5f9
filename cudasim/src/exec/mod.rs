//! Running a kernel: launch validation (what the real driver refuses), the blocks of the grid
//! in parallel, and the counters a launch leaves behind.

pub mod alu;
pub mod float;
mod warp;

use crate::check::{Checks, Finding};
use crate::memory::Memory;
use crate::model::DeviceModel;
use crate::ptx::ir::{Kernel, Module};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use warp::{BlockRunner, LaunchCtx, Stop};

/// A launch's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory, bytes.
    pub dynamic_shared: u32,
}

/// How to run launches.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub checks: Checks,
    /// Run the blocks in an order shuffled with this seed (`None`: in index order, as far as
    /// parallel execution keeps one). Blocks are independent; a kernel whose result depends on
    /// their order is wrong, and a shuffled order shows it.
    pub block_order_seed: Option<u64>,
    /// A warp that executes more instructions than this is reported (an endless loop).
    pub max_warp_steps: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        // 2^28 warp instructions: far beyond any vitcore kernel's warp (the largest run a few
        // million), reached by an endless loop in about half a minute.
        RunOptions {
            checks: Checks::ALL,
            block_order_seed: None,
            max_warp_steps: 1 << 28,
        }
    }
}

impl RunOptions {
    /// From the environment: `CUDASIM_CHECKS` (see [`Checks::from_env`]), `CUDASIM_BLOCK_ORDER_SEED`
    /// and `CUDASIM_MAX_WARP_STEPS`.
    pub fn from_env() -> Result<RunOptions, String> {
        let mut o = RunOptions {
            checks: Checks::from_env()?,
            ..RunOptions::default()
        };
        if let Ok(v) = std::env::var("CUDASIM_BLOCK_ORDER_SEED") {
            o.block_order_seed = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("CUDASIM_BLOCK_ORDER_SEED={v}: expected an integer"))?,
            );
        }
        if let Ok(v) = std::env::var("CUDASIM_MAX_WARP_STEPS") {
            o.max_warp_steps = v
                .trim()
                .parse()
                .map_err(|_| format!("CUDASIM_MAX_WARP_STEPS={v}: expected an integer"))?;
        }
        Ok(o)
    }
}

/// What a launch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions issued, one per warp (a warp's instruction counts once however many lanes
    /// take part).
    pub warp_instructions: u64,
    /// Instructions times the lanes that executed them.
    pub thread_instructions: u64,
    pub global_load_bytes: u64,
    pub global_store_bytes: u64,
    /// Block-wide barriers completed, summed over blocks.
    pub barriers: u64,
    pub blocks: u64,
    /// Warp instructions by class, indexed as [`IClass::ALL`].
    pub class_warp: [u64; 7],
    /// Thread instructions by class, indexed as [`IClass::ALL`].
    pub class_thread: [u64; 7],
    /// f32 floating-point operations: one per lane for add, sub, mul; two for fma.
    pub flops_f32: u64,
    pub mem: MemCounters,
}

/// How a launch used memory, in the units Nsight Compute reports: global requests (one per warp
/// instruction) and the 32-byte sectors they touched against the fewest that could carry the same
/// bytes (the ratio is the coalescing efficiency); shared requests and the wavefronts they took
/// against the fewest possible (the excess is bank conflicts: 32 banks of 4 bytes; a warp's
/// 8-byte accesses are served as two half-warp phases and 16-byte ones as four quarter-warp
/// phases, as on Volta and Turing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemCounters {
    pub global_load_requests: u64,
    pub global_store_requests: u64,
    pub global_load_sectors: u64,
    pub global_store_sectors: u64,
    pub global_load_ideal_sectors: u64,
    pub global_store_ideal_sectors: u64,
    pub shared_load_requests: u64,
    pub shared_store_requests: u64,
    pub shared_load_wavefronts: u64,
    pub shared_store_wavefronts: u64,
    pub shared_load_ideal_wavefronts: u64,
    pub shared_store_ideal_wavefronts: u64,
}

impl MemCounters {
    pub fn add(&mut self, o: &MemCounters) {
        self.global_load_requests += o.global_load_requests;
        self.global_store_requests += o.global_store_requests;
        self.global_load_sectors += o.global_load_sectors;
        self.global_store_sectors += o.global_store_sectors;
        self.global_load_ideal_sectors += o.global_load_ideal_sectors;
        self.global_store_ideal_sectors += o.global_store_ideal_sectors;
        self.shared_load_requests += o.shared_load_requests;
        self.shared_store_requests += o.shared_store_requests;
        self.shared_load_wavefronts += o.shared_load_wavefronts;
        self.shared_store_wavefronts += o.shared_store_wavefronts;
        self.shared_load_ideal_wavefronts += o.shared_load_ideal_wavefronts;
        self.shared_store_ideal_wavefronts += o.shared_store_ideal_wavefronts;
    }
}

impl Stats {
    /// Add another launch's (or block's) counters.
    pub fn add(&mut self, o: &Stats) {
        for i in 0..7 {
            self.class_warp[i] += o.class_warp[i];
            self.class_thread[i] += o.class_thread[i];
        }
        self.flops_f32 += o.flops_f32;
        self.mem.add(&o.mem);
        self.warp_instructions += o.warp_instructions;
        self.thread_instructions += o.thread_instructions;
        self.global_load_bytes += o.global_load_bytes;
        self.global_store_bytes += o.global_store_bytes;
        self.barriers += o.barriers;
        self.blocks += o.blocks;
    }
}

/// A launch the driver refuses before running anything, with the driver's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `CUDA_ERROR_INVALID_VALUE`: a dimension or the shared memory size is out of range.
    InvalidValue(String),
    /// `CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES`: more threads than the kernel was compiled for.
    OutOfResources(String),
    /// `CUDA_ERROR_NOT_SUPPORTED`: a launch the hardware runs but the simulator does not.
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchError {
    Refused(Refusal),
    /// A check failed while the kernel ran.
    Found(Box<Finding>),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Refused(Refusal::InvalidValue(m))
            | LaunchError::Refused(Refusal::OutOfResources(m))
            | LaunchError::Refused(Refusal::Unsupported(m)) => f.write_str(m),
            LaunchError::Found(x) => write!(f, "{x}"),
        }
    }
}

/// Check a launch as the driver would before running it. `max_dynamic_shared` is the kernel's
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` (48 KB minus its static shared memory unless
/// raised).
pub fn validate(k: &Kernel, cfg: &LaunchConfig, model: &DeviceModel, max_dynamic_shared: u32) -> Result<(), Refusal> {
    let inv = |m: String| Err(Refusal::InvalidValue(m));
    for d in 0..3 {
        if cfg.block[d] == 0 || cfg.block[d] > model.max_block_dim[d] {
            return inv(format!(
                "block dimension {} of {} is {}: must be 1 to {}",
                "xyz".as_bytes()[d] as char,
                k.name,
                cfg.block[d],
                model.max_block_dim[d]
            ));
        }
        if cfg.grid[d] == 0 || cfg.grid[d] > model.max_grid_dim[d] {
            return inv(format!(
                "grid dimension {} of {} is {}: must be 1 to {}",
                "xyz".as_bytes()[d] as char,
                k.name,
                cfg.grid[d],
                model.max_grid_dim[d]
            ));
        }
    }
    let blocks: u64 = cfg.grid.iter().map(|&x| x as u64).product();
    if blocks > u32::MAX as u64 {
        return Err(Refusal::Unsupported(format!(
            "a grid of {blocks} blocks for {}: the simulator runs at most 2^32 - 1 blocks per launch",
            k.name
        )));
    }
    let threads: u64 = cfg.block.iter().map(|&x| x as u64).product();
    if threads > model.max_threads_per_block as u64 {
        return inv(format!(
            "{} threads per block for {}: the device allows {}",
            threads, k.name, model.max_threads_per_block
        ));
    }
    if let Some(req) = k.reqntid {
        if req != cfg.block {
            return inv(format!(
                "{} requires a block of {:?} (.reqntid), launched with {:?}",
                k.name, req, cfg.block
            ));
        }
    }
    if let Some(max) = k.max_threads {
        if threads > max as u64 {
            return Err(Refusal::OutOfResources(format!(
                "{} threads per block for {}, which was compiled for at most {} (.maxntid)",
                threads, k.name, max
            )));
        }
    }
    if cfg.dynamic_shared > max_dynamic_shared {
        return inv(format!(
            "{} bytes of dynamic shared memory for {}: at most {} (raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, \
             up to {} in all on this device)",
            cfg.dynamic_shared, k.name, max_dynamic_shared, model.max_shared_per_block_optin
        ));
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Splitmix64: a tiny, well-mixed generator for the block order.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d4_9bb9_9f4e_3a1d);
    z ^ (z >> 31)
}

/// Run kernel `k` of `module` over the grid. `params` is the parameter buffer laid out as the
/// kernel declares (`k.params`); `epoch` numbers the launch for racecheck (1 ..= 2²⁰−1, never
/// the same for two launches in flight). Validate first ([`validate`]).
#[allow(clippy::too_many_arguments)]
pub fn run(
    module: &Module,
    k: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &Memory,
    model: &DeviceModel,
    opts: &RunOptions,
    epoch: u32,
) -> Result<Stats, LaunchError> {
    let snap = mem.snapshot();
    let abort = AtomicBool::new(false);
    let was_freed = |a: u64| mem.was_freed(a);
    let ctx = LaunchCtx {
        kernel: k,
        module,
        snap: &snap,
        params,
        grid: cfg.grid,
        block: cfg.block,
        shared_bytes: if cfg.dynamic_shared == 0 {
            k.static_shared_bytes
        } else {
            k.dynamic_shared_offset + cfg.dynamic_shared
        },
        checks: opts.checks,
        shadow: mem.shadow_enabled() && opts.checks.need_shadow(),
        epoch,
        sm_count: model.sm_count,
        max_warp_steps: opts.max_warp_steps,
        abort: &abort,
        was_freed: &was_freed,
    };
    let nblocks = cfg.grid.iter().map(|&x| x as u64).product::<u64>();
    // The k-th block to start is block (k·stride + offset) mod n: the identity, or with a seed a
    // pseudo-random bijection (stride coprime to n), with nothing materialised per block.
    let (stride, offset) = match opts.block_order_seed {
        None => (1, 0),
        Some(seed) => {
            let mut s = seed;
            let mut stride = splitmix(&mut s) % nblocks.max(1);
            while gcd(stride, nblocks) != 1 {
                stride = (stride + 1) % nblocks.max(1);
            }
            (stride.max(1), splitmix(&mut s) % nblocks.max(1))
        }
    };
    let block_at = |k: u64| ((k as u128 * stride as u128 + offset as u128) % nblocks as u128) as u32;
    let total = Mutex::new(Stats::default());
    // The defect found in the lowest-numbered block wins, so a report does not depend on which
    // host thread got there first (as far as blocks that ran at all go).
    let found: Mutex<Option<(u32, Finding)>> = Mutex::new(None);
    // Blocks in chunks: one BlockRunner (warps, shared memory) per chunk, reused across its blocks.
    let chunk = (nblocks / (rayon::current_num_threads() as u64 * 8)).clamp(1, 64);
    (0..nblocks.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let mut runner = BlockRunner::new();
        let mut stats = Stats::default();
        for k in c * chunk..((c + 1) * chunk).min(nblocks) {
            let b = block_at(k);
            if abort.load(Ordering::Relaxed) {
                break;
            }
            match runner.run(&ctx, b, &mut stats) {
                Ok(()) => stats.blocks += 1,
                Err(Stop::Aborted) => break,
                Err(Stop::Found(f)) => {
                    let mut g = found.lock().unwrap();
                    if g.as_ref().is_none_or(|(ob, _)| b < *ob) {
                        *g = Some((b, *f));
                    }
                    abort.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        total.lock().unwrap().add(&stats);
    });
    if let Some((_, f)) = found.into_inner().unwrap() {
        return Err(LaunchError::Found(Box::new(f)));
    }
    Ok(total.into_inner().unwrap())
}
