//! The CUDA driver API under its C names, so that `libcuda.so` built from this crate stands in
//! for NVIDIA's driver (CUDA Driver API reference, version 13.0).
//!
//! Implemented: initialisation and versions; device count, name, attributes, UUID and total
//! memory; the primary context and `cuCtx*` basics; streams and events (elapsed time from the
//! cost model, [`crate::model::DeviceModel::launch_micros`]); allocation and free (synchronous
//! and stream-ordered); memsets; host↔device and device↔device copies, synchronous and async;
//! pinned host memory; module load from PTX (`cuModuleLoadData`, `…DataEx`, `cuModuleLoad`);
//! function lookup and attributes; kernel launch; host functions on a stream; error strings.
//!
//! Everything runs synchronously, in call order: an "async" copy or launch is complete when its
//! call returns, which is one valid schedule of a single-GPU program and the one a
//! deterministic simulator wants. A launch that a check fails returns the error from
//! `cuLaunchKernel` itself (a real driver may report it at the next synchronisation), and
//! `cuGetErrorString` then gives the finding in full. Unlike a real GPU, where a fault ends the
//! context, only the failing launch is lost.
//!
//! Any other driver call that cudarc can make is exported too and returns
//! `CUDA_ERROR_NOT_SUPPORTED` — never an abort — with a message naming the call.

use crate::check::CheckKind;
use crate::exec::{LaunchConfig, LaunchError, Refusal};
use crate::ptx::ir::Module;
use crate::Device;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

pub type CUresult = c_uint;
pub type CUdevice = c_int;
pub type CUdeviceptr = u64;

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CUDA_ERROR_NOT_INITIALIZED: CUresult = 3;
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = 101;
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = 200;
pub const CUDA_ERROR_INVALID_CONTEXT: CUresult = 201;
pub const CUDA_ERROR_INVALID_PTX: CUresult = 218;
pub const CUDA_ERROR_FILE_NOT_FOUND: CUresult = 301;
pub const CUDA_ERROR_INVALID_HANDLE: CUresult = 400;
pub const CUDA_ERROR_NOT_FOUND: CUresult = 500;
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CUresult = 700;
pub const CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: CUresult = 701;
pub const CUDA_ERROR_LAUNCH_TIMEOUT: CUresult = 702;
pub const CUDA_ERROR_MISALIGNED_ADDRESS: CUresult = 716;
pub const CUDA_ERROR_LAUNCH_FAILED: CUresult = 719;
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = 801;
pub const CUDA_ERROR_UNKNOWN: CUresult = 999;

/// The CUDA version the simulated driver reports (13.0, as the NVRTC wheel CI installs).
pub const DRIVER_VERSION: c_int = 13000;

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct ModuleHandle {
    module: Arc<Module>,
    functions: Mutex<HashMap<String, Box<FunctionHandle>>>,
}

struct FunctionHandle {
    module: Arc<Module>,
    kernel: usize,
    max_dynamic_shared: Mutex<u32>,
}

struct EventHandle {
    /// Modelled time when recorded, µs.
    at: Mutex<Option<f64>>,
    /// Created with `CU_EVENT_DISABLE_TIMING`: it orders work but has no time to read.
    no_timing: bool,
}

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: c_uint = 0x2;

struct StreamHandle;

/// Per-kernel totals for `CUDASIM_PROFILE=1` (printed on stderr at exit).
#[derive(Default, Clone)]
struct ProfileEntry {
    launches: u64,
    stats: crate::Stats,
    seconds: f64,
}

struct Driver {
    dev: Device,
    /// Counters summed over the launches since `cudasimCountersReset` (see [`counter_values`]).
    counters: Mutex<(u64, crate::Stats)>,
    /// Since the reset, per kernel: warp instructions, and the block threads and dynamic shared
    /// bytes of its last launch (for `cudasimMainKernel`).
    kernels: Mutex<HashMap<String, (u64, u32, u32)>>,
    profile: Option<Mutex<HashMap<String, ProfileEntry>>>,
    /// Serialises work: calls run in the order they are made, as on one stream.
    work: Mutex<()>,
    /// Pinned host allocations: address → layout.
    host: Mutex<HashMap<usize, std::alloc::Layout>>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
/// The last detailed message per error code, for `cuGetErrorString`: pointers into the
/// interned strings of [`intern`], which are never freed (cudarc, like any caller, may keep the
/// string for as long as it keeps the error).
static MESSAGES: OnceLock<Mutex<HashMap<CUresult, &'static CStr>>> = OnceLock::new();
/// The context handle: a fixed non-null address (one device, one primary context).
static CONTEXT: u8 = 0;
thread_local! {
    static CURRENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn messages() -> &'static Mutex<HashMap<CUresult, &'static CStr>> {
    MESSAGES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A `'static` copy of `s`, one per distinct text (a program makes few distinct errors).
fn intern(s: &str) -> &'static CStr {
    static TEXTS: OnceLock<Mutex<std::collections::HashSet<&'static CStr>>> = OnceLock::new();
    let clean = CString::new(s.replace('\0', " ")).unwrap_or_default();
    let mut set = TEXTS
        .get_or_init(|| Mutex::new(std::collections::HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&t) = set.get(clean.as_c_str()) {
        return t;
    }
    let t: &'static CStr = Box::leak(clean.into_boxed_c_str());
    set.insert(t);
    t
}

/// Return `code`, with `msg` as what `cuGetErrorString` says for it until the next error of
/// that code.
fn fail(code: CUresult, msg: impl Into<String>) -> CUresult {
    let msg: String = msg.into();
    let text = intern(&msg);
    messages().lock().unwrap_or_else(|e| e.into_inner()).insert(code, text);
    code
}

fn driver() -> Result<&'static Driver, CUresult> {
    match DRIVER.get() {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(fail(CUDA_ERROR_NOT_INITIALIZED, e.clone())),
        None => Err(fail(CUDA_ERROR_NOT_INITIALIZED, "cuInit has not been called")),
    }
}

/// Run an entry point's body, turning a panic (a simulator bug) into an error code: unwinding
/// across the C boundary would abort the host program.
fn guard(name: &str, f: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fail(CUDA_ERROR_UNKNOWN, format!("cudasim: internal error in {name}: {what}"))
        }
    }
}

fn check_dev(dev: CUdevice) -> Result<(), CUresult> {
    if dev != 0 {
        return Err(fail(
            CUDA_ERROR_INVALID_DEVICE,
            format!("device {dev} does not exist (the simulator has one, 0)"),
        ));
    }
    Ok(())
}

fn nonnull<T>(p: *const T, what: &str) -> Result<(), CUresult> {
    if p.is_null() {
        return Err(fail(CUDA_ERROR_INVALID_VALUE, format!("{what} is a null pointer")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Initialisation, versions, errors
// ---------------------------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn cuInit(_flags: c_uint) -> CUresult {
    guard("cuInit", || {
        DRIVER.get_or_init(|| {
            let profile = std::env::var("CUDASIM_PROFILE").is_ok_and(|v| v == "1");
            if profile {
                extern "C" {
                    fn atexit(f: extern "C" fn()) -> c_int;
                }
                unsafe { atexit(print_profile) };
            }
            Device::from_env().map(|dev| Driver {
                dev,
                counters: Mutex::new((0, crate::Stats::default())),
                kernels: Mutex::new(HashMap::new()),
                profile: profile.then(|| Mutex::new(HashMap::new())),
                work: Mutex::new(()),
                host: Mutex::new(HashMap::new()),
            })
        });
        driver().map(|_| ())
    })
}

/// # Safety
/// `v` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    guard("cuDriverGetVersion", || {
        nonnull(v, "driverVersion")?;
        *v = DRIVER_VERSION;
        Ok(())
    })
}

fn error_name(code: CUresult) -> &'static str {
    match code {
        CUDA_SUCCESS => "CUDA_SUCCESS",
        CUDA_ERROR_INVALID_VALUE => "CUDA_ERROR_INVALID_VALUE",
        CUDA_ERROR_OUT_OF_MEMORY => "CUDA_ERROR_OUT_OF_MEMORY",
        CUDA_ERROR_NOT_INITIALIZED => "CUDA_ERROR_NOT_INITIALIZED",
        CUDA_ERROR_NO_DEVICE => "CUDA_ERROR_NO_DEVICE",
        CUDA_ERROR_INVALID_DEVICE => "CUDA_ERROR_INVALID_DEVICE",
        CUDA_ERROR_INVALID_IMAGE => "CUDA_ERROR_INVALID_IMAGE",
        CUDA_ERROR_INVALID_CONTEXT => "CUDA_ERROR_INVALID_CONTEXT",
        CUDA_ERROR_INVALID_PTX => "CUDA_ERROR_INVALID_PTX",
        CUDA_ERROR_FILE_NOT_FOUND => "CUDA_ERROR_FILE_NOT_FOUND",
        CUDA_ERROR_INVALID_HANDLE => "CUDA_ERROR_INVALID_HANDLE",
        CUDA_ERROR_NOT_FOUND => "CUDA_ERROR_NOT_FOUND",
        CUDA_ERROR_ILLEGAL_ADDRESS => "CUDA_ERROR_ILLEGAL_ADDRESS",
        CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        CUDA_ERROR_LAUNCH_TIMEOUT => "CUDA_ERROR_LAUNCH_TIMEOUT",
        CUDA_ERROR_MISALIGNED_ADDRESS => "CUDA_ERROR_MISALIGNED_ADDRESS",
        CUDA_ERROR_LAUNCH_FAILED => "CUDA_ERROR_LAUNCH_FAILED",
        CUDA_ERROR_NOT_SUPPORTED => "CUDA_ERROR_NOT_SUPPORTED",
        _ => "CUDA_ERROR_UNKNOWN",
    }
}

fn default_message(code: CUresult) -> &'static str {
    match code {
        CUDA_SUCCESS => "no error",
        CUDA_ERROR_INVALID_VALUE => "invalid argument",
        CUDA_ERROR_OUT_OF_MEMORY => "out of memory",
        CUDA_ERROR_NOT_INITIALIZED => "initialization error",
        CUDA_ERROR_NOT_SUPPORTED => "operation not supported",
        _ => "unknown error",
    }
}

/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(code: CUresult, out: *mut *const c_char) -> CUresult {
    guard("cuGetErrorString", || {
        nonnull(out, "pStr")?;
        let m = messages().lock().unwrap_or_else(|e| e.into_inner());
        *out = m
            .get(&code)
            .copied()
            .unwrap_or_else(|| intern(default_message(code)))
            .as_ptr();
        Ok(())
    })
}

/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(code: CUresult, out: *mut *const c_char) -> CUresult {
    guard("cuGetErrorName", || {
        nonnull(out, "pStr")?;
        static NAMES: OnceLock<Mutex<HashMap<CUresult, CString>>> = OnceLock::new();
        let mut n = NAMES
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .map_err(|_| CUDA_ERROR_UNKNOWN)?;
        *out = n
            .entry(code)
            .or_insert_with(|| CString::new(error_name(code)).unwrap())
            .as_ptr();
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------------------------

/// # Safety
/// `count` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    guard("cuDeviceGetCount", || {
        nonnull(count, "count")?;
        driver()?;
        *count = 1;
        Ok(())
    })
}

/// # Safety
/// `dev` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut CUdevice, ordinal: c_int) -> CUresult {
    guard("cuDeviceGet", || {
        nonnull(dev, "device")?;
        driver()?;
        check_dev(ordinal)?;
        *dev = 0;
        Ok(())
    })
}

/// # Safety
/// `name` must be valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetName", || {
        nonnull(name, "name")?;
        let d = driver()?;
        check_dev(dev)?;
        if len <= 0 {
            return Err(fail(CUDA_ERROR_INVALID_VALUE, "name buffer length must be positive"));
        }
        let s = d.dev.model.name();
        let bytes = s.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, name, n);
        *name.add(n) = 0;
        Ok(())
    })
}

/// # Safety
/// `bytes` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    guard("cuDeviceTotalMem_v2", || {
        nonnull(bytes, "bytes")?;
        let d = driver()?;
        check_dev(dev)?;
        *bytes = d.dev.model.total_mem as usize;
        Ok(())
    })
}

/// # Safety
/// `uuid` must be valid for 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut u8, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetUuid", || {
        nonnull(uuid, "uuid")?;
        driver()?;
        check_dev(dev)?;
        let id = *b"cudasim-device-0";
        std::ptr::copy_nonoverlapping(id.as_ptr(), uuid, 16);
        Ok(())
    })
}

/// # Safety
/// As `cuDeviceGetUuid`.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut u8, dev: CUdevice) -> CUresult {
    cuDeviceGetUuid(uuid, dev)
}

/// The value of a device attribute (`CUdevice_attribute`), from the device model.
fn attribute(d: &Device, attrib: c_uint) -> Option<c_int> {
    let m = &d.model;
    Some(match attrib {
        1 => m.max_threads_per_block as c_int,
        2..=4 => m.max_block_dim[attrib as usize - 2] as c_int,
        5..=7 => m.max_grid_dim[attrib as usize - 5] as c_int,
        8 => m.max_static_shared_per_block as c_int,
        9 => 65536,
        10 => m.warp_size as c_int,
        11 => i32::MAX, // max pitch
        12 => m.regs_per_block as c_int,
        13 => m.clock_khz as c_int,
        14 => 512,
        15 => 1,
        16 => m.sm_count as c_int,
        17 => 0,
        18 => 0,
        19 => 1,
        20 => 0,
        31 => 1,
        32 => 0,
        33..=35 => 0,
        36 => m.mem_clock_khz as c_int,
        37 => m.mem_bus_bits as c_int,
        38 => m.l2_bytes as c_int,
        39 => m.max_threads_per_sm as c_int,
        40 => 2,
        41 => 1,
        50 => 0,
        75 => m.compute_capability.0 as c_int,
        76 => m.compute_capability.1 as c_int,
        81 => m.shared_per_sm as c_int,
        82 => m.regs_per_sm as c_int,
        97 => m.max_shared_per_block_optin as c_int,
        106 => m.max_blocks_per_sm as c_int,
        // Stream-ordered memory pools: not simulated, so cudarc uses cuMemAlloc/cuMemFree.
        115 => 0,
        _ => return None,
    })
}

/// # Safety
/// `pi` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut c_int, attrib: c_uint, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetAttribute", || {
        nonnull(pi, "pi")?;
        let d = driver()?;
        check_dev(dev)?;
        match attribute(&d.dev, attrib) {
            Some(v) => {
                *pi = v;
                Ok(())
            }
            None => Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                format!("cudasim: device attribute {attrib} is not modelled"),
            )),
        }
    })
}

/// # Safety
/// `major` and `minor` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceComputeCapability", || {
        nonnull(major, "major")?;
        nonnull(minor, "minor")?;
        let d = driver()?;
        check_dev(dev)?;
        *major = d.dev.model.compute_capability.0 as c_int;
        *minor = d.dev.model.compute_capability.1 as c_int;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------------

fn ctx_ptr() -> *mut c_void {
    &CONTEXT as *const u8 as *mut c_void
}

/// # Safety
/// `pctx` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut *mut c_void, dev: CUdevice) -> CUresult {
    guard("cuDevicePrimaryCtxRetain", || {
        nonnull(pctx, "pctx")?;
        driver()?;
        check_dev(dev)?;
        *pctx = ctx_ptr();
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    guard("cuDevicePrimaryCtxRelease_v2", || {
        driver()?;
        check_dev(dev)
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult {
    cuDevicePrimaryCtxRelease_v2(dev)
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> CUresult {
    guard("cuCtxSetCurrent", || {
        driver()?;
        if !ctx.is_null() && ctx != ctx_ptr() {
            return Err(fail(CUDA_ERROR_INVALID_CONTEXT, "not a context of this driver"));
        }
        CURRENT.with(|c| c.set(!ctx.is_null()));
        Ok(())
    })
}

/// # Safety
/// `pctx` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut *mut c_void) -> CUresult {
    guard("cuCtxGetCurrent", || {
        nonnull(pctx, "pctx")?;
        driver()?;
        *pctx = if CURRENT.with(|c| c.get()) {
            ctx_ptr()
        } else {
            std::ptr::null_mut()
        };
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: *mut c_void) -> CUresult {
    cuCtxSetCurrent(ctx)
}

/// # Safety
/// `pctx`, when not null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut *mut c_void) -> CUresult {
    guard("cuCtxPopCurrent_v2", || {
        driver()?;
        if !pctx.is_null() {
            *pctx = ctx_ptr();
        }
        Ok(())
    })
}

/// # Safety
/// `dev` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut CUdevice) -> CUresult {
    guard("cuCtxGetDevice", || {
        nonnull(dev, "device")?;
        driver()?;
        *dev = 0;
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    guard("cuCtxSynchronize", || driver().map(|_| ()))
}

// ---------------------------------------------------------------------------------------------
// Streams and events
// ---------------------------------------------------------------------------------------------

/// # Safety
/// `stream` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(stream: *mut *mut c_void, _flags: c_uint) -> CUresult {
    guard("cuStreamCreate", || {
        nonnull(stream, "phStream")?;
        driver()?;
        *stream = Box::into_raw(Box::new(StreamHandle)) as *mut c_void;
        Ok(())
    })
}

/// # Safety
/// As `cuStreamCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    stream: *mut *mut c_void,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    cuStreamCreate(stream, flags)
}

/// # Safety
/// `stream` must come from `cuStreamCreate` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(stream: *mut c_void) -> CUresult {
    guard("cuStreamDestroy_v2", || {
        driver()?;
        if !stream.is_null() {
            drop(Box::from_raw(stream as *mut StreamHandle));
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(_stream: *mut c_void) -> CUresult {
    guard("cuStreamSynchronize", || driver().map(|_| ()))
}

#[no_mangle]
pub extern "C" fn cuStreamQuery(_stream: *mut c_void) -> CUresult {
    guard("cuStreamQuery", || driver().map(|_| ()))
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(_stream: *mut c_void, _event: *mut c_void, _flags: c_uint) -> CUresult {
    // Work is complete when its call returns: every event has already happened.
    guard("cuStreamWaitEvent", || driver().map(|_| ()))
}

/// # Safety
/// `event` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(event: *mut *mut c_void, flags: c_uint) -> CUresult {
    guard("cuEventCreate", || {
        nonnull(event, "phEvent")?;
        driver()?;
        let h = EventHandle {
            at: Mutex::new(None),
            no_timing: flags & EVENT_DISABLE_TIMING != 0,
        };
        *event = Box::into_raw(Box::new(h)) as *mut c_void;
        Ok(())
    })
}

unsafe fn event<'a>(e: *mut c_void) -> Result<&'a EventHandle, CUresult> {
    if e.is_null() {
        return Err(fail(CUDA_ERROR_INVALID_HANDLE, "null event"));
    }
    Ok(&*(e as *const EventHandle))
}

/// # Safety
/// `ev` must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(ev: *mut c_void, _stream: *mut c_void) -> CUresult {
    guard("cuEventRecord", || {
        let d = driver()?;
        let e = event(ev)?;
        *e.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.dev.clock_micros());
        Ok(())
    })
}

/// # Safety
/// As `cuEventRecord`.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags(ev: *mut c_void, stream: *mut c_void, _flags: c_uint) -> CUresult {
    cuEventRecord(ev, stream)
}

/// # Safety
/// `ev` must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(ev: *mut c_void) -> CUresult {
    guard("cuEventSynchronize", || {
        driver()?;
        event(ev).map(|_| ())
    })
}

/// # Safety
/// `ev` must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(ev: *mut c_void) -> CUresult {
    cuEventSynchronize(ev)
}

/// Elapsed modelled time between two recorded events, in milliseconds (the cost model of
/// [`crate::model::DeviceModel`], not wall time).
///
/// # Safety
/// `ms` must be valid for a write; the events must come from `cuEventCreate`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> CUresult {
    guard("cuEventElapsedTime", || {
        nonnull(ms, "pMilliseconds")?;
        driver()?;
        let (ea, eb) = (event(start)?, event(end)?);
        if ea.no_timing || eb.no_timing {
            return Err(fail(
                CUDA_ERROR_INVALID_HANDLE,
                "an event created with CU_EVENT_DISABLE_TIMING has no time",
            ));
        }
        let (a, b) = (
            *ea.at.lock().unwrap_or_else(|e| e.into_inner()),
            *eb.at.lock().unwrap_or_else(|e| e.into_inner()),
        );
        match (a, b) {
            (Some(a), Some(b)) => {
                *ms = ((b - a) / 1000.0) as f32;
                Ok(())
            }
            // What a real driver says of an event that was never recorded.
            _ => Err(fail(CUDA_ERROR_INVALID_HANDLE, "an event was never recorded")),
        }
    })
}

/// # Safety
/// As `cuEventElapsedTime`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> CUresult {
    cuEventElapsedTime(ms, start, end)
}

/// # Safety
/// `ev` must come from `cuEventCreate` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(ev: *mut c_void) -> CUresult {
    guard("cuEventDestroy_v2", || {
        driver()?;
        if !ev.is_null() {
            drop(Box::from_raw(ev as *mut EventHandle));
        }
        Ok(())
    })
}

/// Run `f(user_data)` now (the stream's earlier work is complete).
///
/// # Safety
/// `f` must be a valid host function for `user_data`.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(
    _stream: *mut c_void,
    f: Option<unsafe extern "C" fn(*mut c_void)>,
    user_data: *mut c_void,
) -> CUresult {
    guard("cuLaunchHostFunc", || {
        driver()?;
        match f {
            Some(f) => {
                f(user_data);
                Ok(())
            }
            None => Err(fail(CUDA_ERROR_INVALID_VALUE, "null host function")),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// # Safety
/// `dptr` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    guard("cuMemAlloc_v2", || {
        nonnull(dptr, "dptr")?;
        let d = driver()?;
        if bytes == 0 {
            return Err(fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes"));
        }
        match d.dev.mem.alloc(bytes as u64) {
            Some(p) => {
                *dptr = p;
                Ok(())
            }
            None => Err(fail(
                CUDA_ERROR_OUT_OF_MEMORY,
                format!(
                    "cudasim: out of memory allocating {bytes} bytes ({} of {} bytes in use; CUDASIM_MEMORY_MIB sets the size)",
                    d.dev.mem.used(),
                    d.dev.model.total_mem
                ),
            )),
        }
    })
}

/// # Safety
/// As `cuMemAlloc_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, _stream: *mut c_void) -> CUresult {
    cuMemAlloc_v2(dptr, bytes)
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard("cuMemFree_v2", || {
        let d = driver()?;
        if dptr == 0 {
            return Ok(());
        }
        d.dev
            .mem
            .free(dptr)
            .map_err(|e| fail(CUDA_ERROR_INVALID_VALUE, format!("cuMemFree: {}", e.0)))
    })
}

#[no_mangle]
pub extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, _stream: *mut c_void) -> CUresult {
    cuMemFree_v2(dptr)
}

/// # Safety
/// `free` and `total` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    guard("cuMemGetInfo_v2", || {
        nonnull(free, "free")?;
        nonnull(total, "total")?;
        let d = driver()?;
        *total = d.dev.model.total_mem as usize;
        *free = d.dev.model.total_mem.saturating_sub(d.dev.mem.used()) as usize;
        Ok(())
    })
}

fn copy_err(e: crate::memory::RangeError) -> CUresult {
    fail(CUDA_ERROR_INVALID_VALUE, format!("cudasim: {}", e.0))
}

/// # Safety
/// `src` must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, bytes: usize) -> CUresult {
    guard("cuMemcpyHtoD_v2", || {
        let d = driver()?;
        if bytes == 0 {
            return Ok(());
        }
        nonnull(src, "srcHost")?;
        let data = std::slice::from_raw_parts(src as *const u8, bytes);
        let _w = d.work.lock().unwrap_or_else(|e| e.into_inner());
        d.dev.mem.write(dst, data).map_err(copy_err)?;
        d.dev.charge_micros(d.dev.model.copy_micros(bytes as u64));
        Ok(())
    })
}

/// # Safety
/// As `cuMemcpyHtoD_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
    _s: *mut c_void,
) -> CUresult {
    cuMemcpyHtoD_v2(dst, src, bytes)
}

/// # Safety
/// `dst` must be valid for `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, bytes: usize) -> CUresult {
    guard("cuMemcpyDtoH_v2", || {
        let d = driver()?;
        if bytes == 0 {
            return Ok(());
        }
        nonnull(dst, "dstHost")?;
        let out = std::slice::from_raw_parts_mut(dst as *mut u8, bytes);
        let _w = d.work.lock().unwrap_or_else(|e| e.into_inner());
        d.dev.mem.read(src, out).map_err(copy_err)?;
        d.dev.charge_micros(d.dev.model.copy_micros(bytes as u64));
        Ok(())
    })
}

/// # Safety
/// As `cuMemcpyDtoH_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
    _s: *mut c_void,
) -> CUresult {
    cuMemcpyDtoH_v2(dst, src, bytes)
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> CUresult {
    guard("cuMemcpyDtoD_v2", || {
        let d = driver()?;
        let _w = d.work.lock().unwrap_or_else(|e| e.into_inner());
        d.dev.mem.copy(dst, src, bytes as u64).map_err(copy_err)?;
        d.dev.charge_micros(d.dev.model.device_copy_micros(bytes as u64));
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, _s: *mut c_void) -> CUresult {
    cuMemcpyDtoD_v2(dst, src, bytes)
}

fn memset(name: &str, dst: CUdeviceptr, value: u32, width: u32, n: usize) -> CUresult {
    guard(name, || {
        let d = driver()?;
        let _w = d.work.lock().unwrap_or_else(|e| e.into_inner());
        d.dev.mem.memset(dst, value, width, n as u64).map_err(copy_err)?;
        d.dev
            .charge_micros(d.dev.model.device_copy_micros(n as u64 * width as u64) / 2.0);
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CUresult {
    memset("cuMemsetD8_v2", dst, v as u32, 1, n)
}

#[no_mangle]
pub extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, _s: *mut c_void) -> CUresult {
    memset("cuMemsetD8Async", dst, v as u32, 1, n)
}

#[no_mangle]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize) -> CUresult {
    memset("cuMemsetD16_v2", dst, v as u32, 2, n)
}

#[no_mangle]
pub extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, v: u16, n: usize, _s: *mut c_void) -> CUresult {
    memset("cuMemsetD16Async", dst, v as u32, 2, n)
}

#[no_mangle]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize) -> CUresult {
    memset("cuMemsetD32_v2", dst, v, 4, n)
}

#[no_mangle]
pub extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, v: u32, n: usize, _s: *mut c_void) -> CUresult {
    memset("cuMemsetD32Async", dst, v, 4, n)
}

/// Page-locked host memory is ordinary host memory here (every copy is synchronous).
///
/// # Safety
/// `pp` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, _flags: c_uint) -> CUresult {
    guard("cuMemHostAlloc", || {
        nonnull(pp, "pp")?;
        let d = driver()?;
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), 4096)
            .map_err(|_| fail(CUDA_ERROR_INVALID_VALUE, "bad host allocation size"))?;
        let p = std::alloc::alloc_zeroed(layout);
        if p.is_null() {
            return Err(fail(CUDA_ERROR_OUT_OF_MEMORY, "host allocation failed"));
        }
        d.host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p as usize, layout);
        *pp = p as *mut c_void;
        Ok(())
    })
}

/// # Safety
/// As `cuMemHostAlloc`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    cuMemHostAlloc(pp, bytes, 0)
}

/// # Safety
/// `p` must come from `cuMemHostAlloc` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    guard("cuMemFreeHost", || {
        let d = driver()?;
        match d.host.lock().unwrap_or_else(|e| e.into_inner()).remove(&(p as usize)) {
            Some(layout) => {
                std::alloc::dealloc(p as *mut u8, layout);
                Ok(())
            }
            None => Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                "cuMemFreeHost: not a pointer from cuMemHostAlloc",
            )),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Modules and functions
// ---------------------------------------------------------------------------------------------

fn load_module_text(text: &str) -> Result<*mut c_void, CUresult> {
    let d = driver()?;
    let m = d
        .dev
        .load_ptx(text)
        .map_err(|e| fail(CUDA_ERROR_INVALID_PTX, format!("cudasim: cannot load the module: {e}")))?;
    let h = Box::new(ModuleHandle {
        module: m,
        functions: Mutex::new(HashMap::new()),
    });
    Ok(Box::into_raw(h) as *mut c_void)
}

/// Load a module from PTX text (NUL-terminated). A CUBIN (ELF) image is refused with
/// `CUDA_ERROR_INVALID_IMAGE`: the simulator runs PTX only.
///
/// # Safety
/// `module` must be valid for a write; `image` must point to a NUL-terminated image.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut *mut c_void, image: *const c_void) -> CUresult {
    guard("cuModuleLoadData", || {
        nonnull(module, "module")?;
        nonnull(image, "image")?;
        let bytes = image as *const u8;
        // Byte by byte: a NUL-terminated PTX text may be shorter than the ELF magic.
        if *bytes == 0x7f && (1..4).all(|i| *bytes.add(i) == b"\x7fELF"[i]) {
            return Err(fail(
                CUDA_ERROR_INVALID_IMAGE,
                "cudasim runs PTX, not CUBIN: load the kernels as PTX (vitcore does this by itself under the simulator)",
            ));
        }
        let text = CStr::from_ptr(image as *const c_char)
            .to_str()
            .map_err(|_| fail(CUDA_ERROR_INVALID_PTX, "the PTX text is not UTF-8"))?;
        *module = load_module_text(text)?;
        Ok(())
    })
}

/// # Safety
/// As `cuModuleLoadData`; the JIT options are ignored.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut *mut c_void,
    image: *const c_void,
    _n: c_uint,
    _opts: *mut c_void,
    _vals: *mut *mut c_void,
) -> CUresult {
    cuModuleLoadData(module, image)
}

/// # Safety
/// `module` must be valid for a write; `fname` a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(module: *mut *mut c_void, fname: *const c_char) -> CUresult {
    guard("cuModuleLoad", || {
        nonnull(module, "module")?;
        nonnull(fname, "fname")?;
        let path = CStr::from_ptr(fname).to_string_lossy().into_owned();
        let text =
            std::fs::read_to_string(&path).map_err(|e| fail(CUDA_ERROR_FILE_NOT_FOUND, format!("{path}: {e}")))?;
        *module = load_module_text(&text)?;
        Ok(())
    })
}

/// # Safety
/// `module` must come from a module load and not be used afterwards (nor its functions).
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: *mut c_void) -> CUresult {
    guard("cuModuleUnload", || {
        driver()?;
        if module.is_null() {
            return Err(fail(CUDA_ERROR_INVALID_HANDLE, "null module"));
        }
        drop(Box::from_raw(module as *mut ModuleHandle));
        Ok(())
    })
}

/// # Safety
/// `f` must be valid for a write; `module` must come from a module load; `name` must be
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    f: *mut *mut c_void,
    module: *mut c_void,
    name: *const c_char,
) -> CUresult {
    guard("cuModuleGetFunction", || {
        nonnull(f, "hfunc")?;
        nonnull(name, "name")?;
        let d = driver()?;
        if module.is_null() {
            return Err(fail(CUDA_ERROR_INVALID_HANDLE, "null module"));
        }
        let mh = &*(module as *const ModuleHandle);
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let idx = mh
            .module
            .kernels
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| fail(CUDA_ERROR_NOT_FOUND, format!("no kernel named {name} in the module")))?;
        let mut fns = mh.functions.lock().unwrap_or_else(|e| e.into_inner());
        let fh = fns.entry(name).or_insert_with(|| {
            let k = &mh.module.kernels[idx];
            Box::new(FunctionHandle {
                module: mh.module.clone(),
                kernel: idx,
                max_dynamic_shared: Mutex::new(
                    d.dev
                        .model
                        .max_static_shared_per_block
                        .saturating_sub(k.static_shared_bytes),
                ),
            })
        });
        *f = fh.as_ref() as *const FunctionHandle as *mut c_void;
        Ok(())
    })
}

unsafe fn function<'a>(f: *mut c_void) -> Result<&'a FunctionHandle, CUresult> {
    if f.is_null() {
        return Err(fail(CUDA_ERROR_INVALID_HANDLE, "null function"));
    }
    Ok(&*(f as *const FunctionHandle))
}

/// # Safety
/// `pi` must be valid for a write; `f` must come from `cuModuleGetFunction`.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: c_uint, f: *mut c_void) -> CUresult {
    guard("cuFuncGetAttribute", || {
        nonnull(pi, "pi")?;
        let d = driver()?;
        let fh = function(f)?;
        let k = &fh.module.kernels[fh.kernel];
        *pi = match attrib {
            0 => k.max_threads.unwrap_or(d.dev.model.max_threads_per_block) as c_int,
            1 => k.static_shared_bytes as c_int,
            2 | 3 => 0,
                        // PTX_VERSION: the module's `.target` (what ptxas would compile for); BINARY_VERSION:
            // the device's own architecture, which the simulator runs it as.
            5 => fh.module.target.trim_start_matches("sm_").chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0),
            6 => {
                let (a, b) = d.dev.model.compute_capability;
                (a * 10 + b) as c_int
            }
            8 => *fh.max_dynamic_shared.lock().unwrap_or_else(|e| e.into_inner()) as c_int,
            _ => {
                return Err(fail(
                    CUDA_ERROR_NOT_SUPPORTED,
                    format!("cudasim: function attribute {attrib} is not modelled (register counts come from ptxas, which the simulator does not run)"),
                ))
            }
        };
        Ok(())
    })
}

/// Only `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` (opt-in to more dynamic shared memory)
/// and the shared-memory carveout hint are accepted.
///
/// # Safety
/// `f` must come from `cuModuleGetFunction`.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(f: *mut c_void, attrib: c_uint, value: c_int) -> CUresult {
    guard("cuFuncSetAttribute", || {
        let d = driver()?;
        let fh = function(f)?;
        let k = &fh.module.kernels[fh.kernel];
        match attrib {
            8 => {
                let max = d
                    .dev
                    .model
                    .max_shared_per_block_optin
                    .saturating_sub(k.static_shared_bytes);
                if value < 0 || value as u32 > max {
                    return Err(fail(
                        CUDA_ERROR_INVALID_VALUE,
                        format!(
                            "{value} bytes of dynamic shared memory for {}: this device allows {max}",
                            k.name
                        ),
                    ));
                }
                *fh.max_dynamic_shared.lock().unwrap_or_else(|e| e.into_inner()) = value as u32;
                Ok(())
            }
            9 => Ok(()), // preferred shared-memory carveout: a hint
            _ => Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                format!("cudasim: function attribute {attrib} cannot be set"),
            )),
        }
    })
}

#[no_mangle]
pub extern "C" fn cuFuncSetCacheConfig(_f: *mut c_void, _config: c_uint) -> CUresult {
    // A preference for the L1/shared split: no effect on results, none on the cost model.
    guard("cuFuncSetCacheConfig", || driver().map(|_| ()))
}

/// Launch a kernel and run it to completion.
///
/// # Safety
/// `f` must come from `cuModuleGetFunction`; `params` must hold one valid pointer per kernel
/// parameter, each to a value of that parameter's size.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    _stream: *mut c_void,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    guard("cuLaunchKernel", || {
        let d = driver()?;
        let fh = function(f)?;
        let k = &fh.module.kernels[fh.kernel];
        if !extra.is_null() {
            return Err(fail(
                CUDA_ERROR_NOT_SUPPORTED,
                "cudasim: kernel arguments through `extra` are not supported",
            ));
        }
        if params.is_null() && !k.params.is_empty() {
            return Err(fail(
                CUDA_ERROR_INVALID_VALUE,
                format!("{} takes {} arguments, none given", k.name, k.params.len()),
            ));
        }
        let mut buf = vec![0u8; k.param_bytes as usize];
        for (i, p) in k.params.iter().enumerate() {
            let src = *params.add(i) as *const u8;
            nonnull(src, "kernel argument pointer")?;
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr().add(p.offset as usize), p.size as usize);
        }
        let cfg = LaunchConfig {
            grid: [gx, gy, gz],
            block: [bx, by, bz],
            dynamic_shared: shared,
        };
        let max_dyn = *fh.max_dynamic_shared.lock().unwrap_or_else(|e| e.into_inner());
        let _w = d.work.lock().unwrap_or_else(|e| e.into_inner());
        let t0 = std::time::Instant::now();
        match d.dev.launch_raw(&fh.module, k, cfg, &buf, max_dyn) {
            Ok(stats) => {
                {
                    let mut c = d.counters.lock().unwrap_or_else(|e| e.into_inner());
                    c.0 += 1;
                    c.1.add(&stats);
                    let mut ks = d.kernels.lock().unwrap_or_else(|e| e.into_inner());
                    let e = ks.entry(k.name.clone()).or_default();
                    *e = (e.0 + stats.warp_instructions, bx * by * bz, shared);
                }
                if let Some(p) = &d.profile {
                    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                    let e = p.entry(k.name.clone()).or_default();
                    e.launches += 1;
                    e.stats.add(&stats);
                    e.seconds += t0.elapsed().as_secs_f64();
                }
                Ok(())
            }
            Err(LaunchError::Refused(Refusal::InvalidValue(m))) => {
                Err(fail(CUDA_ERROR_INVALID_VALUE, format!("cudasim: {m}")))
            }
            Err(LaunchError::Refused(Refusal::OutOfResources(m))) => {
                Err(fail(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, format!("cudasim: {m}")))
            }
            Err(LaunchError::Refused(Refusal::Unsupported(m))) => {
                Err(fail(CUDA_ERROR_NOT_SUPPORTED, format!("cudasim: {m}")))
            }
            Err(LaunchError::Found(x)) => {
                let code = match x.check {
                    CheckKind::Memcheck if x.detail.starts_with("misaligned") => CUDA_ERROR_MISALIGNED_ADDRESS,
                    CheckKind::Memcheck => CUDA_ERROR_ILLEGAL_ADDRESS,
                    CheckKind::Watchdog => CUDA_ERROR_LAUNCH_TIMEOUT,
                    _ => CUDA_ERROR_LAUNCH_FAILED,
                };
                let msg = format!("cudasim {x}");
                if std::env::var_os("CUDASIM_QUIET").is_none() {
                    eprintln!("{msg}");
                }
                Err(fail(code, msg))
            }
        }
    })
}

/// `CUDASIM_PROFILE=1`: at exit, each kernel's launches, simulated instructions, global traffic,
/// coalescing efficiency of its global loads and stores (ideal / actual 32-byte sectors), the
/// shared-memory bank conflicts (wavefronts beyond the ideal, per shared request), and the host
/// time the simulation took, most expensive first.
extern "C" fn print_profile() {
    let Some(Ok(d)) = DRIVER.get() else { return };
    let Some(p) = &d.profile else { return };
    let Ok(p) = p.lock() else { return };
    let mut rows: Vec<(&String, &ProfileEntry)> = p.iter().collect();
    rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    let total: f64 = rows.iter().map(|r| r.1.seconds).sum();
    eprintln!("cudasim profile (host time simulating each kernel; not a GPU time):");
    eprintln!(
        "{:<30} {:>8} {:>14} {:>16} {:>14} {:>7} {:>7} {:>9} {:>9} {:>6}",
        "kernel",
        "launches",
        "warp instr",
        "thread instr",
        "global bytes",
        "ld eff",
        "st eff",
        "bank cfl",
        "seconds",
        "%"
    );
    let pct = |ideal: u64, actual: u64| {
        if actual == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * ideal as f64 / actual as f64)
        }
    };
    for (name, e) in rows {
        let (s, m) = (&e.stats, &e.stats.mem);
        let shared_req = m.shared_load_requests + m.shared_store_requests;
        let excess = (m.shared_load_wavefronts + m.shared_store_wavefronts)
            .saturating_sub(m.shared_load_ideal_wavefronts + m.shared_store_ideal_wavefronts);
        let conflicts = if shared_req == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", excess as f64 / shared_req as f64)
        };
        eprintln!(
            "{:<30} {:>8} {:>14} {:>16} {:>14} {:>7} {:>7} {:>9} {:>9.3} {:>5.1}%",
            name,
            e.launches,
            s.warp_instructions,
            s.thread_instructions,
            s.global_load_bytes + s.global_store_bytes,
            pct(m.global_load_ideal_sectors, m.global_load_sectors),
            pct(m.global_store_ideal_sectors, m.global_store_sectors),
            conflicts,
            e.seconds,
            100.0 * e.seconds / total.max(1e-12)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// cudasim's own entry points (not CUDA's): the launch counters
// ---------------------------------------------------------------------------------------------
//
// A program that finds these symbols in `libcuda.so` is running on the simulator and can read
// what its launches did (vitcore's `bench kernels --device cuda` prints them):
//   cudasimCountersReset()                     start counting from zero;
//   cudasimCounterCount() -> n                 how many counters there are;
//   cudasimCounterName(i) -> "name"            the i-th counter's name (static, NUL-terminated);
//   cudasimCountersRead(out, capacity) -> n    the values, summed over the launches since the reset;
//   cudasimMainKernel(threads*, shared*) -> name  the kernel with the most instructions since the
//                                              reset, and its block size and dynamic shared memory;
//   cudasimMarkUninitialized(ptr, bytes)       a recycled buffer's old contents are not its data.
// Names rather than a struct layout, so a program built against another version still reads
// the counters it knows by name.

/// The counters in their published order: `(name, value)` pairs of `(launches, stats)`.
fn counter_values(launches: u64, s: &crate::Stats) -> Vec<(&'static str, u64)> {
    let m = &s.mem;
    let mut v = vec![
        ("launches", launches),
        ("warp_instructions", s.warp_instructions),
        ("thread_instructions", s.thread_instructions),
    ];
    const WARP: [&str; 7] = [
        "warp_int",
        "warp_f32",
        "warp_f64",
        "warp_memory",
        "warp_control",
        "warp_sync",
        "warp_move",
    ];
    const THREAD: [&str; 7] = [
        "thread_int",
        "thread_f32",
        "thread_f64",
        "thread_memory",
        "thread_control",
        "thread_sync",
        "thread_move",
    ];
    for i in 0..7 {
        v.push((WARP[i], s.class_warp[i]));
    }
    for i in 0..7 {
        v.push((THREAD[i], s.class_thread[i]));
    }
    v.extend([
        ("flops_f32", s.flops_f32),
        ("global_load_bytes", s.global_load_bytes),
        ("global_store_bytes", s.global_store_bytes),
        ("global_load_requests", m.global_load_requests),
        ("global_store_requests", m.global_store_requests),
        ("global_load_sectors", m.global_load_sectors),
        ("global_store_sectors", m.global_store_sectors),
        ("global_load_ideal_sectors", m.global_load_ideal_sectors),
        ("global_store_ideal_sectors", m.global_store_ideal_sectors),
        ("shared_load_requests", m.shared_load_requests),
        ("shared_store_requests", m.shared_store_requests),
        ("shared_load_wavefronts", m.shared_load_wavefronts),
        ("shared_store_wavefronts", m.shared_store_wavefronts),
        ("shared_load_ideal_wavefronts", m.shared_load_ideal_wavefronts),
        ("shared_store_ideal_wavefronts", m.shared_store_ideal_wavefronts),
        ("barriers", s.barriers),
        ("blocks", s.blocks),
    ]);
    v
}

/// `cudasimMarkUninitialized(ptr, bytes)`: the range holds no data of its (new) owner: a
/// recycling allocator calls it when it hands a buffer out again, so that initcheck reports a
/// read before the first write as it would for a fresh allocation.
#[no_mangle]
pub extern "C" fn cudasimMarkUninitialized(ptr: CUdeviceptr, bytes: usize) -> CUresult {
    guard("cudasimMarkUninitialized", || {
        let d = driver()?;
        d.dev.mem.mark_uninitialized(ptr, bytes as u64).map_err(copy_err)
    })
}

#[no_mangle]
pub extern "C" fn cudasimCountersReset() -> CUresult {
    guard("cudasimCountersReset", || {
        let d = driver()?;
        *d.counters.lock().unwrap_or_else(|e| e.into_inner()) = (0, crate::Stats::default());
        d.kernels.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    })
}

/// `cudasimMainKernel(threads, dynamic_shared)`: the kernel that executed the most warp
/// instructions since the reset (null if none ran), with the block size and dynamic shared
/// memory of its last launch — what a theoretical-occupancy figure needs besides the kernel's
/// registers and static shared memory (which ptxas knows, not the simulator).
///
/// # Safety
/// `threads` and `dynamic_shared`, when not null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cudasimMainKernel(threads: *mut c_uint, dynamic_shared: *mut c_uint) -> *const c_char {
    let Ok(d) = driver() else { return std::ptr::null() };
    let ks = d.kernels.lock().unwrap_or_else(|e| e.into_inner());
    let Some((name, &(_, t, s))) = ks.iter().max_by_key(|(_, v)| v.0) else {
        return std::ptr::null();
    };
    if !threads.is_null() {
        *threads = t;
    }
    if !dynamic_shared.is_null() {
        *dynamic_shared = s;
    }
    intern(name).as_ptr()
}

#[no_mangle]
pub extern "C" fn cudasimCounterCount() -> c_uint {
    counter_values(0, &crate::Stats::default()).len() as c_uint
}

/// The name of counter `i`, or null past the last.
#[no_mangle]
pub extern "C" fn cudasimCounterName(i: c_uint) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        counter_values(0, &crate::Stats::default())
            .into_iter()
            .map(|(n, _)| CString::new(n).unwrap())
            .collect()
    });
    names.get(i as usize).map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Write up to `capacity` counter values to `out`; returns how many were written.
///
/// # Safety
/// `out` must be valid for `capacity` writes.
#[no_mangle]
pub unsafe extern "C" fn cudasimCountersRead(out: *mut u64, capacity: c_uint) -> c_uint {
    let Ok(d) = driver() else { return 0 };
    if out.is_null() {
        return 0;
    }
    let (launches, stats) = *d.counters.lock().unwrap_or_else(|e| e.into_inner());
    let v = counter_values(launches, &stats);
    let n = v.len().min(capacity as usize);
    for (i, (_, x)) in v.iter().take(n).enumerate() {
        *out.add(i) = *x;
    }
    n as c_uint
}

// ---------------------------------------------------------------------------------------------
// Calls cudarc can make that the simulator does not implement
// ---------------------------------------------------------------------------------------------

macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            /// Not simulated: returns `CUDA_ERROR_NOT_SUPPORTED` (never aborts).
            #[no_mangle]
            pub extern "C" fn $name() -> CUresult {
                fail(CUDA_ERROR_NOT_SUPPORTED, concat!("cudasim does not simulate ", stringify!($name)))
            }
        )*
    };
}

// The callee ignores its arguments: under the C calling convention the caller owns them.
not_supported!(
    cuCtxCreate_v2,
    cuCtxCreate_v3,
    cuCtxCreate_v4,
    cuCtxDestroy_v2,
    cuCtxGetLimit,
    cuCtxSetLimit,
    cuCtxGetCacheConfig,
    cuCtxSetCacheConfig,
    cuCtxSetFlags,
    cuCtxGetStreamPriorityRange,
    cuDevicePrimaryCtxReset_v2,
    cuDevicePrimaryCtxSetFlags_v2,
    cuDevicePrimaryCtxGetState,
    cuDeviceGetDefaultMemPool,
    cuDeviceGetMemPool,
    cuDeviceSetMemPool,
    cuMemPoolCreate,
    cuMemPoolDestroy,
    cuMemPoolGetAttribute,
    cuMemPoolSetAttribute,
    cuMemPoolTrimTo,
    cuMemAllocFromPoolAsync,
    cuMemAllocManaged,
    cuMemAdvise_v2,
    cuMemPrefetchAsync_v2,
    cuMemcpyPeerAsync,
    cuMemcpy2D_v2,
    cuMemcpy2DAsync_v2,
    cuMemcpy3D_v2,
    cuModuleGetGlobal_v2,
    cuLaunchCooperativeKernel,
    cuLaunchKernelEx,
    cuOccupancyMaxActiveBlocksPerMultiprocessor,
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags,
    cuOccupancyMaxPotentialBlockSize,
    cuOccupancyMaxPotentialBlockSizeWithFlags,
    cuOccupancyAvailableDynamicSMemPerBlock,
    cuOccupancyMaxPotentialClusterSize,
    cuOccupancyMaxActiveClusters,
    cuStreamBeginCapture_v2,
    cuStreamEndCapture,
    cuStreamIsCapturing,
    cuStreamAttachMemAsync,
    cuGraphInstantiateWithFlags,
    cuGraphLaunch,
    cuGraphUpload,
    cuGraphDestroy,
    cuGraphExecDestroy,
    cuImportExternalMemory,
    cuExternalMemoryGetMappedBuffer,
    cuDestroyExternalMemory,
    cuProfilerStart,
    cuProfilerStop,
    cuPointerGetAttribute,
    cuLinkCreate_v2,
    cuLinkAddData_v2,
    cuLinkComplete,
    cuLinkDestroy,
    cuGetProcAddress_v2,
    cuGetExportTable,
);
