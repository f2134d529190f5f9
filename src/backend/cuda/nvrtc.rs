//! Run-time compilation of the kernels with NVRTC, to CUBIN for one exact GPU architecture.
//!
//! Why CUBIN for `sm_XY` and not PTX: PTX is turned into machine code by the *driver*, and a
//! driver rejects PTX from an NVRTC newer than itself (PTX ISA 9.0 from NVRTC 13.0 needs a 13.0
//! driver). A CUBIN is already machine code for one architecture, and compiling for a real
//! `sm_XY` makes NVRTC run ptxas now, whose `-v` report (registers, spills) we parse and check.
//!
//! Nothing here runs on a GPU: the `nvrtc` test compiles every kernel for sm_75 and sm_90 on a
//! machine without one.

use crate::error::{Error, Result};
use cudarc::nvrtc::{result as nvrtc_result, sys};
use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The output of one compilation.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The kernel file's name (e.g. `matmul.cu`).
    pub file: String,
    /// `sm_XY`.
    pub arch: String,
    /// The machine code, loadable with `cuModuleLoadData`.
    pub cubin: Vec<u8>,
    /// NVRTC's program log (warnings and the ptxas `-v` report).
    pub log: String,
    /// Per-kernel resource usage parsed from the log.
    pub kernels: Vec<KernelStats>,
}

impl Compiled {
    /// Kernels whose ptxas report shows register spills (a spill is a slow local-memory access
    /// in the inner loop; the kernels are written to have none).
    pub fn spills(&self) -> Vec<&KernelStats> {
        self.kernels
            .iter()
            .filter(|k| k.spill_stores > 0 || k.spill_loads > 0)
            .collect()
    }
}

/// ptxas's resource report for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub name: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// The kernel sources embedded by `build.rs`: `KERNEL_SOURCES` (the `kernels/*.cu` files) and
/// `KERNEL_HEADERS` (the `kernels/*.cuh` files they include), as `(file name, source)`.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
pub use sources::{KERNEL_HEADERS, KERNEL_SOURCES};

/// The source of the embedded kernel file `file` (e.g. `"softmax.cu"`).
pub fn kernel_source(file: &str) -> Option<&'static str> {
    KERNEL_SOURCES.iter().find(|(f, _)| *f == file).map(|(_, s)| *s)
}

/// Whether NVRTC can be loaded *and* compile: a missing `libnvrtc-builtins` only shows when a
/// program is compiled, so this compiles an empty kernel once (cached for the process). Never
/// panics; the error says what is missing and how to get it.
pub fn nvrtc_available() -> std::result::Result<(), String> {
    static STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            // cudarc panics when it cannot dlopen the library: ask whether it can, first.
            if !unsafe { sys::is_culib_present() } {
                return Err(
                    "NVRTC (libnvrtc.so.13 or libnvrtc.so.12) could not be loaded: install the CUDA \
                            toolkit's NVRTC, or `pip install 'nvidia-cuda-nvrtc==13.0.*'`, and put its lib \
                            folder on LD_LIBRARY_PATH"
                        .to_string(),
                );
            }
            let probe = "extern \"C\" __global__ void vitcore_probe(float* x) { x[threadIdx.x] = 0.0f; }";
            compile_cubin("probe.cu", probe, "sm_75")
                .map(|_| ())
                .map_err(|e| format!("NVRTC loads but cannot compile: {e}"))
        })
        .clone()
}

/// NVRTC's version `(major, minor)`; call only after [`nvrtc_available`] succeeded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().ok()?;
    Some((major, minor))
}

/// The real architectures this NVRTC can compile for, as compute capabilities ×10 (75, 80, ...,
/// 90, 100, 120); call only after [`nvrtc_available`] succeeded.
pub fn supported_archs() -> Vec<i32> {
    let mut n = 0;
    if unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }.result().is_err() || n <= 0 {
        return Vec::new();
    }
    let mut v = vec![0i32; n as usize];
    if unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }.result().is_err() {
        return Vec::new();
    }
    v
}

/// The architecture to compile for on a GPU of compute capability `(major, minor)`: `sm_XY`
/// itself when NVRTC knows it, else the newest one NVRTC knows of the same major version with a
/// lower minor (a CUBIN for sm_XY runs on sm_XZ, Z ≥ Y), else an error saying what to install.
pub fn arch_for(major: i32, minor: i32) -> std::result::Result<String, String> {
    let want = major * 10 + minor;
    let archs = supported_archs();
    if archs.is_empty() || archs.contains(&want) {
        return Ok(format!("sm_{want}"));
    }
    match archs.iter().copied().filter(|&a| a / 10 == major && a <= want).max() {
        Some(a) => Ok(format!("sm_{a}")),
        None => Err(format!(
            "this NVRTC ({}) cannot compile for compute capability {major}.{minor} (it knows {archs:?}): \
             install an NVRTC from a CUDA toolkit that supports this GPU",
            nvrtc_version().map_or("unknown version".to_string(), |(a, b)| format!("{a}.{b}")),
        )),
    }
}

fn has_cuda_headers(dir: &Path) -> bool {
    dir.join("cuda_fp16.h").is_file() || dir.join("cuda_runtime.h").is_file()
}

/// Subfolders of `dir` whose names start with `prefix`, sorted newest-looking last.
fn subdirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Where the CUDA headers are, for `--include-path`: `$VITCORE_NVRTC_INCLUDE`, else
/// `$CUDA_HOME/include` (or `$CUDA_PATH`), else the usual toolkit places, else the include folder
/// of a pip-installed NVRTC wheel (`site-packages/nvidia/cu13/include`, found next to a lib folder
/// on `LD_LIBRARY_PATH`, in the active virtualenv, or in the usual site-packages). `None` when
/// nothing is found: the kernels need no CUDA header, so they still compile.
pub fn include_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VITCORE_NVRTC_INCLUDE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d)); // explicit: trusted even if it looks wrong (the log will say)
    }
    let mut cands: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            cands.push(PathBuf::from(d).join("include"));
        }
    }
    cands.push(PathBuf::from("/usr/local/cuda/include"));
    for d in subdirs(Path::new("/usr/local"), "cuda-").into_iter().rev() {
        cands.push(d.join("include"));
    }
    cands.push(PathBuf::from("/opt/cuda/include"));
    cands.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/include"));
    cands.push(PathBuf::from("/usr/include")); // Debian/Ubuntu's nvidia-cuda-toolkit package
                                               // pip wheels: .../site-packages/nvidia/cu13/{lib,include} (13.x), .../nvidia/cuda_runtime/include (12.x).
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        for lib in std::env::split_paths(&ld) {
            if let Some(parent) = lib.parent() {
                cands.push(parent.join("include"));
                if let Some(nvidia) = parent.parent() {
                    cands.push(nvidia.join("cuda_runtime").join("include"));
                }
            }
        }
    }
    let mut site_roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        site_roots.push(PathBuf::from(venv).join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        site_roots.push(PathBuf::from(home).join(".local/lib"));
    }
    site_roots.extend(["/usr/local/lib", "/usr/lib", "/opt/conda/lib"].map(PathBuf::from));
    for root in site_roots {
        for py in subdirs(&root, "python3") {
            for sp in ["site-packages", "dist-packages"] {
                let nv = py.join(sp).join("nvidia");
                cands.push(nv.join("cu13").join("include"));
                cands.push(nv.join("cuda_runtime").join("include"));
            }
        }
    }
    cands.into_iter().find(|d| has_cuda_headers(d))
}

fn c_string(bytes: &[c_char]) -> String {
    // NVRTC's buffers are NUL-terminated.
    let bytes: Vec<u8> = bytes.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An NVRTC program being compiled; destroyed on every path out.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

/// Compile `source` (with the embedded `*.cuh` headers available to `#include`) for `arch`,
/// returning the program and NVRTC's log; a compile error is `Error::Device` with the log.
fn run_nvrtc(file: &str, source: &str, arch: &str, extra: &[&str]) -> Result<(Program, String)> {
    let err = |what: String| Error::Device(format!("NVRTC, {file} for {arch}: {what}"));
    let src = CString::new(source).map_err(|_| err("source contains a NUL byte".into()))?;
    let name = CString::new(file).map_err(|_| err("file name contains a NUL byte".into()))?;
    let headers: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(_, s)| CString::new(*s).expect("header text"))
        .collect();
    let header_names: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(n, _)| CString::new(*n).expect("header name"))
        .collect();
    let header_ptrs: Vec<*const c_char> = headers.iter().map(|h| h.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|h| h.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            header_ptrs.len() as i32,
            header_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| err(format!("nvrtcCreateProgram failed: {e}")))?;
    let program = Program(prog);

    let mut opts = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    opts.extend(extra.iter().map(|s| s.to_string()));
    if let Some(inc) = include_dir() {
        opts.push(format!("--include-path={}", inc.display()));
    }
    let compiled = unsafe { nvrtc_result::compile_program(program.0, &opts) };
    let log = unsafe { nvrtc_result::get_program_log(program.0) }
        .map(|l| c_string(&l))
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(err(format!("compile failed ({e}), options {opts:?}:\n{log}")));
    }
    Ok((program, log))
}

/// Compile one kernel file to CUBIN for `arch` (`"sm_75"`, `"sm_90"`, ...), with `-Xptxas=-v`
/// for the resource report. Returns the CUBIN, the log and the parsed report; a compile error
/// returns `Error::Device` with the log. Check [`nvrtc_available`] first: without NVRTC this
/// would panic inside cudarc.
pub fn compile_cubin(file: &str, source: &str, arch: &str) -> Result<Compiled> {
    let err = |what: String| Error::Device(format!("NVRTC, {file} for {arch}: {what}"));
    let (program, log) = run_nvrtc(file, source, arch, &["-Xptxas=-v"])?;
    let mut size = 0usize;
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| err(format!("nvrtcGetCUBINSize: {e}")))?;
    let mut cubin = vec![0u8; size];
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr() as *mut c_char) }
        .result()
        .map_err(|e| err(format!("nvrtcGetCUBIN: {e}")))?;
    if cubin.is_empty() {
        return Err(err(
            "NVRTC returned an empty CUBIN (was a virtual compute_XX architecture given?)".into(),
        ));
    }
    let kernels = parse_ptxas_log(&log);
    Ok(Compiled {
        file: file.to_string(),
        arch: arch.to_string(),
        cubin,
        log,
        kernels,
    })
}

/// Compile one kernel file to PTX text for the virtual architecture `arch` (`"compute_75"`):
/// what the driver compiles itself when it loads the module (a real driver's JIT, or the
/// cudasim simulator, which runs PTX). Without ptxas there is no resource report.
pub fn compile_ptx(file: &str, source: &str, arch: &str) -> Result<String> {
    let err = |what: String| Error::Device(format!("NVRTC, {file} for {arch}: {what}"));
    let (program, _log) = run_nvrtc(file, source, arch, &[])?;
    let mut size = 0usize;
    unsafe { sys::nvrtcGetPTXSize(program.0, &mut size) }
        .result()
        .map_err(|e| err(format!("nvrtcGetPTXSize: {e}")))?;
    let mut ptx = vec![0 as c_char; size];
    unsafe { sys::nvrtcGetPTX(program.0, ptx.as_mut_ptr()) }
        .result()
        .map_err(|e| err(format!("nvrtcGetPTX: {e}")))?;
    Ok(c_string(&ptx))
}

/// The first unsigned integer in `s` that is directly followed by `suffix` (e.g. `" registers"`).
fn number_before(s: &str, suffix: &str) -> Option<u32> {
    let end = s.find(suffix)?;
    let head = s[..end].trim_end();
    let start = head.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

/// Parse ptxas's `-v` report (as NVRTC puts it in the program log) into per-kernel statistics:
/// ```text
/// ptxas info    : Compiling entry function 'softmax_fwd_warp' for 'sm_90'
/// ptxas info    : Function properties for softmax_fwd_warp
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 18 registers, 376 bytes cmem[0]
/// ```
/// Only entry functions (kernels) are reported; device functions are inlined.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelStats> {
    let mut out: Vec<KernelStats> = Vec::new();
    let mut current: Option<usize> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            current = Some(match out.iter().position(|k| k.name == name) {
                Some(i) => i,
                None => {
                    out.push(KernelStats {
                        name,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            });
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            // Properties of a non-entry function (not inlined) must not be charged to a kernel.
            let name = rest.trim();
            current = out.iter().position(|k| k.name == name);
        } else if let Some(i) = current {
            let k = &mut out[i];
            if line.contains("stack frame") {
                k.stack_bytes = number_before(line, " bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, " bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, " bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains(" registers") {
                k.registers = number_before(line, " registers").unwrap_or(0);
                k.shared_bytes = number_before(line, " bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// The names of the `extern "C" __global__` kernels defined in a source, in order.
pub fn kernel_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("__global__") {
        rest = &rest[i + "__global__".len()..];
        // `__global__ void [__launch_bounds__(...)] name(`
        let mut s = rest.trim_start();
        s = s.strip_prefix("void").unwrap_or(s).trim_start();
        if let Some(after) = s.strip_prefix("__launch_bounds__") {
            s = after.split_once(')').map_or("", |(_, t)| t).trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && s[name.len()..].trim_start().starts_with('(') {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
                   ptxas info    : Compiling entry function 'k1' for 'sm_75'\n\
                   ptxas info    : Function properties for k1\n\
                   \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                   ptxas info    : Used 40 registers, 2048 bytes smem, 376 bytes cmem[0]\n\
                   ptxas info    : Compiling entry function 'k2' for 'sm_75'\n\
                   ptxas info    : Function properties for k2\n\
                   \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                   ptxas info    : Used 18 registers, 376 bytes cmem[0]\n";
        let k = parse_ptxas_log(log);
        assert_eq!(k.len(), 2);
        assert_eq!(
            k[0],
            KernelStats {
                name: "k1".into(),
                registers: 40,
                shared_bytes: 2048,
                stack_bytes: 8,
                spill_stores: 4,
                spill_loads: 12
            }
        );
        assert_eq!((k[1].registers, k[1].shared_bytes, k[1].spill_loads), (18, 0, 0));
    }

    #[test]
    fn finds_kernel_names() {
        let src = "static __device__ float f(float x);\n\
                   extern \"C\" __global__ void a_1(float* x) {}\n\
                   extern \"C\" __global__ void __launch_bounds__(256)\n    b_2 (const float* y) {}\n";
        assert_eq!(kernel_names(src), ["a_1", "b_2"]);
    }

    #[test]
    fn every_kernel_file_is_embedded() {
        let files: Vec<&str> = KERNEL_SOURCES.iter().map(|(f, _)| *f).collect();
        for f in [
            "adam.cu",
            "cross_entropy.cu",
            "dropout.cu",
            "elementwise.cu",
            "gelu.cu",
            "layernorm.cu",
            "matmul.cu",
            "patchify.cu",
            "softmax.cu",
        ] {
            assert!(files.contains(&f), "{f} missing from {files:?}");
            assert!(
                !kernel_names(kernel_source(f).unwrap()).is_empty(),
                "{f} defines no kernel"
            );
        }
        assert!(KERNEL_HEADERS.iter().any(|(f, _)| *f == "common.cuh"));
    }
}
