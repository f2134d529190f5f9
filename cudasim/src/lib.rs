//! # cudasim: a PTX simulator behind the CUDA driver API
//!
//! cudasim runs CUDA kernels with no GPU. It is built twice from this crate:
//!
//! * as a **Rust library** ([`Device`]: load PTX, allocate, copy, launch), which its own tests
//!   and benchmark use;
//! * as **`libcuda.so`** (the `cdylib`, see [`driver`]): the CUDA driver API under its C
//!   names. Put its folder on `LD_LIBRARY_PATH` (`eval "$(bash scripts/cudasim-env.sh)"` does it)
//!   and an unchanged CUDA program — vitcore's `--device cuda`, through cudarc — loads it
//!   instead of NVIDIA's driver and runs its kernels here.
//!
//! What it does with a kernel:
//! 1. **Decodes** the PTX once, at module load ([`ptx`]): every instruction NVRTC emits for
//!    vitcore's kernels, each with the semantics of NVIDIA's PTX ISA (rounding modes, NaN rules,
//!    the warp shuffles). An instruction or directive it does not know fails the load, naming
//!    it and its line.
//! 2. **Executes** it with the hardware's execution model where results depend on it
//!    ([`exec`]): warps of 32 lanes with divergence and reconvergence, shuffles inside a warp,
//!    block-wide barriers, blocks in parallel and in a shuffleable order.
//! 3. **Checks** every launch ([`check`]): memcheck, racecheck, initcheck and synccheck, as
//!    NVIDIA's compute-sanitizer does. A finding fails the launch and names the check, the
//!    kernel, the PTX line, the block, the thread and the address.
//!
//! What it cannot tell you: how fast a kernel is (events report a documented cost model,
//! [`model::DeviceModel::launch_micros`], never a measurement), memory-model effects beyond
//! the checks (caches, weak ordering between blocks without atomics), and anything about the
//! real driver, ptxas or NVRTC versions. Real hardware outranks it.

pub mod check;
pub mod driver;
pub mod exec;
pub mod memory;
pub mod model;
pub mod ptx;

pub use check::{CheckKind, Checks, Finding};
pub use exec::{LaunchConfig, LaunchError, Refusal, RunOptions, Stats};
pub use memory::Memory;
pub use model::DeviceModel;
pub use ptx::ir::Module;
pub use ptx::LoadError;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A kernel argument, for [`Device::launch`]: its bytes must match the parameter's size.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A device pointer or any 8-byte value.
    U64(u64),
    I64(i64),
    U32(u32),
    I32(i32),
    F32(f32),
    F64(f64),
    /// A by-value struct, laid out as the kernel's C declaration.
    Bytes(Vec<u8>),
}

impl Arg {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::U64(v) => v.to_le_bytes().to_vec(),
            Arg::I64(v) => v.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
            Arg::F64(v) => v.to_le_bytes().to_vec(),
            Arg::Bytes(b) => b.clone(),
        }
    }
}

/// One simulated GPU: its model, memory, launch options and modelled clock.
pub struct Device {
    pub model: DeviceModel,
    pub mem: Memory,
    pub opts: RunOptions,
    epoch: AtomicU32,
    /// Modelled time of the work done so far, µs (what events read).
    clock_us: Mutex<f64>,
    /// Counters of every launch so far.
    totals: Mutex<Stats>,
}

impl Device {
    pub fn new(model: DeviceModel, opts: RunOptions) -> Device {
        let shadow = opts.checks.need_shadow();
        Device {
            mem: Memory::new(model.total_mem, shadow),
            model,
            opts,
            epoch: AtomicU32::new(0),
            clock_us: Mutex::new(0.0),
            totals: Mutex::new(Stats::default()),
        }
    }

    /// The device the environment describes (`CUDASIM_DEVICE`, `CUDASIM_SM_COUNT`,
    /// `CUDASIM_CHECKS`, ...; see [`DeviceModel::from_env`] and [`RunOptions::from_env`]).
    pub fn from_env() -> Result<Device, String> {
        Ok(Device::new(DeviceModel::from_env()?, RunOptions::from_env()?))
    }

    /// Parse and check a PTX module for this device: its `.target` must not be newer than the
    /// device (as a real driver refuses), and no kernel may declare more static shared memory
    /// than a block can have.
    pub fn load_ptx(&self, text: &str) -> Result<Arc<Module>, LoadError> {
        let m = ptx::parse_module(text)?;
        if let Some(sm) = m.target.strip_prefix("sm_") {
            let digits: String = sm.chars().take_while(|c| c.is_ascii_digit()).collect();
            let want: u32 = digits.parse().unwrap_or(0);
            let (a, b) = self.model.compute_capability;
            if want > a * 10 + b {
                return Err(LoadError {
                    line: m.target_line,
                    msg: format!("the module targets {} but the device is sm_{a}{b}", m.target),
                });
            }
        }
        for k in &m.kernels {
            if k.static_shared_bytes > self.model.max_static_shared_per_block {
                return Err(LoadError {
                    line: 1,
                    msg: format!(
                        "kernel {} declares {} bytes of static shared memory; a block may have {}",
                        k.name, k.static_shared_bytes, self.model.max_static_shared_per_block
                    ),
                });
            }
        }
        Ok(Arc::new(m))
    }

    /// A fresh launch number for racecheck; at the counter's wrap-around every access record is
    /// forgotten, so that records of an old launch can never pass for the current one.
    pub fn next_epoch(&self) -> u32 {
        let e = self.epoch.fetch_add(1, Ordering::Relaxed) % check::EPOCH_LIMIT + 1;
        if e == 1 && self.epoch.load(Ordering::Relaxed) > 1 {
            self.mem.clear_launch_records();
        }
        e
    }

    /// Lay out `args` in `kernel`'s parameter buffer: one argument per parameter, each of the
    /// parameter's size.
    pub fn param_buffer(k: &ptx::ir::Kernel, args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        if args.len() != k.params.len() {
            return Err(format!(
                "{} takes {} arguments, {} given",
                k.name,
                k.params.len(),
                args.len()
            ));
        }
        let mut buf = vec![0u8; k.param_bytes as usize];
        for (p, a) in k.params.iter().zip(args) {
            if a.len() != p.size as usize {
                return Err(format!(
                    "argument {} of {} is {} bytes, the kernel declares {}",
                    p.name,
                    k.name,
                    a.len(),
                    p.size
                ));
            }
            buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(a);
        }
        Ok(buf)
    }

    /// Launch `kernel` of `module` and run it to completion.
    pub fn launch(&self, module: &Module, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<Stats, LaunchError> {
        let k = module.kernel(kernel).ok_or_else(|| {
            LaunchError::Refused(Refusal::InvalidValue(format!("no kernel named {kernel} in the module")))
        })?;
        let bytes: Vec<Vec<u8>> = args.iter().map(Arg::bytes).collect();
        let params = Device::param_buffer(k, &bytes).map_err(|m| LaunchError::Refused(Refusal::InvalidValue(m)))?;
        let max_dyn = self
            .model
            .max_static_shared_per_block
            .saturating_sub(k.static_shared_bytes);
        self.launch_raw(module, k, cfg, &params, max_dyn)
    }

    /// Launch with a ready parameter buffer (the driver API's path).
    pub fn launch_raw(
        &self,
        module: &Module,
        k: &ptx::ir::Kernel,
        cfg: LaunchConfig,
        params: &[u8],
        max_dynamic_shared: u32,
    ) -> Result<Stats, LaunchError> {
        exec::validate(k, &cfg, &self.model, max_dynamic_shared).map_err(LaunchError::Refused)?;
        let epoch = self.next_epoch();
        let stats = exec::run(module, k, &cfg, params, &self.mem, &self.model, &self.opts, epoch)?;
        let us = self.model.launch_micros(
            stats.warp_instructions,
            stats.global_load_bytes + stats.global_store_bytes,
        );
        *self.clock_us.lock().unwrap() += us;
        self.totals.lock().unwrap().add(&stats);
        Ok(stats)
    }

    /// Advance the modelled clock (copies, memsets).
    pub fn charge_micros(&self, us: f64) {
        *self.clock_us.lock().unwrap() += us;
    }

    /// The modelled time so far, µs.
    pub fn clock_micros(&self) -> f64 {
        *self.clock_us.lock().unwrap()
    }

    /// Counters summed over every launch so far.
    pub fn totals(&self) -> Stats {
        *self.totals.lock().unwrap()
    }

    // Host-side memory helpers for Rust callers (tests, benchmark).

    pub fn alloc(&self, bytes: u64) -> Option<u64> {
        self.mem.alloc(bytes)
    }

    pub fn upload_f32(&self, data: &[f32]) -> u64 {
        let p = self.mem.alloc((data.len() * 4) as u64).expect("device memory");
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.mem.write(p, &bytes).expect("upload");
        p
    }

    pub fn upload_u32(&self, data: &[u32]) -> u64 {
        let p = self.mem.alloc((data.len() * 4) as u64).expect("device memory");
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.mem.write(p, &bytes).expect("upload");
        p
    }

    pub fn download_f32(&self, ptr: u64, n: usize) -> Vec<f32> {
        let mut bytes = vec![0u8; n * 4];
        self.mem.read(ptr, &mut bytes).expect("download");
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    pub fn download_u32(&self, ptr: u64, n: usize) -> Vec<u32> {
        let mut bytes = vec![0u8; n * 4];
        self.mem.read(ptr, &mut bytes).expect("download");
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}
