//! `vitcore bench kernels`: how fast is every kernel, measured honestly, and is it still right?
//!
//! For each kernel (forward and backward) at the ViT's own shapes — the seed preset (batch 512,
//! 50 tokens, embed 16, 8 heads, feed-forward 2048) and a small config (batch 256, 50 tokens,
//! embed 64, 4 heads, MLP 256) — and at one large shape per family, the harness
//!
//! 1. makes several input sets, together larger than twice the last-level cache where memory
//!    allows, and rotates through them run by run, so a run never finds its inputs still in
//!    cache from the previous one (which would flatter every memory-bound kernel);
//! 2. warms up (every input set once, page faults and buffer pools out of the way), then times
//!    many runs — `Instant` on the CPU, CUDA events on the GPU — and reports the median;
//! 3. recomputes one output after timing and validates it against an independent reference
//!    (`check`); a disagreement marks the row INVALID and makes the command fail;
//! 4. compares the speed with a yardstick measured in the same run: the copy bandwidth for
//!    memory-bound kernels (bytes the kernel must move / median time), and for matrix products
//!    the CPU's f32 peak, measured with the GEMM's own FMA instructions on every thread (`peak`),
//!    or, on the GPU, cuBLAS on the same shape.
//!
//! `cases` lists every case once, for both devices (shapes from `shapes`, references from
//! `check`); `cpu` and `cuda` run them, each with its own clock and yardsticks; this file holds
//! what they share: the timing loop, the records, the table, the JSON report and the machine
//! description.

pub mod cases;
pub mod check;
pub mod cpu;
pub mod cuda;
pub mod loader;
pub mod peak;
pub mod shapes;
pub mod step;

use crate::backend::cuda::{resolve, DeviceChoice, Resolved};
use crate::error::{Error, Result};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// What `vitcore bench kernels` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: DeviceChoice,
    /// Small shapes and few runs: a smoke test that finishes in seconds.
    pub quick: bool,
    /// Run only the cases whose `kernel phase shape` line contains this.
    pub filter: Option<String>,
    /// Also write the records as JSON here.
    pub json: Option<PathBuf>,
}

/// Which pass of an op a kernel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Fwd,
    Bwd,
    /// An optimiser update.
    Step,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Fwd => "fwd",
            Phase::Bwd => "bwd",
            Phase::Step => "step",
        })
    }
}

/// What limits a kernel, and so which yardstick it is held against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// Moves more bytes than it can compute on: GB/s against the copy bandwidth.
    Memory,
    /// A matrix product: GFLOP/s against the peak (CPU) or cuBLAS (GPU).
    Compute,
    /// Whichever of the two limits it at this shape on this machine (the roofline): decided once
    /// the yardsticks are measured, by [`CaseInfo::resolve`]. Records never keep this value.
    Roofline,
}

/// One benchmark's identity and the work it must do.
#[derive(Clone, Debug)]
pub struct CaseInfo {
    pub kernel: &'static str,
    pub phase: Phase,
    /// Which configuration and tensor (`seed fc1 25600x2048x16`; products are M×N×K).
    pub shape: String,
    /// Bytes the kernel must read and write at least (each input read once, each output written once).
    pub bytes: f64,
    /// Floating-point operations (a multiply-add is two); 0 where not meaningful.
    pub flops: f64,
    pub bound: Bound,
}

impl CaseInfo {
    /// The line `--filter` searches: `kernel phase shape`.
    pub fn label(&self) -> String {
        format!("{} {} {}", self.kernel, self.phase, self.shape)
    }

    pub fn matches(&self, filter: Option<&str>) -> bool {
        filter.is_none_or(|f| self.label().contains(f))
    }

    /// The case with its bound decided for a machine that copies at `bandwidth_gbps` and
    /// computes at `peak_gflops`: a `Roofline` case is memory-bound when moving its bytes takes
    /// longer than its flops would at peak (compute-bound otherwise; memory without a peak).
    pub fn resolve(&self, bandwidth_gbps: f64, peak_gflops: Option<f64>) -> CaseInfo {
        let bound = match (self.bound, peak_gflops) {
            (Bound::Roofline, Some(peak)) if self.flops / peak > self.bytes / bandwidth_gbps => Bound::Compute,
            (Bound::Roofline, _) => Bound::Memory,
            (b, _) => b,
        };
        CaseInfo { bound, ..self.clone() }
    }
}

/// What a kernel's speed is compared with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Yardstick {
    /// `copy bandwidth`, `CPU peak` or `cuBLAS`.
    pub name: String,
    pub value: f64,
    /// `GB/s` or `GFLOP/s`.
    pub unit: String,
}

impl Yardstick {
    pub fn bandwidth(gbps: f64) -> Yardstick {
        Yardstick {
            name: "copy bandwidth".into(),
            value: gbps,
            unit: "GB/s".into(),
        }
    }
    pub fn flops(name: &str, gflops: f64) -> Yardstick {
        Yardstick {
            name: name.into(),
            value: gflops,
            unit: "GFLOP/s".into(),
        }
    }
    /// Short form for the table: `copy 14.2 GB/s`, `peak 157 GFLOP/s`, `cuBLAS 41.3 TFLOP/s`.
    fn short(&self) -> String {
        let name = match self.name.as_str() {
            "copy bandwidth" => "copy",
            "CPU peak" => "peak",
            other => other,
        };
        format!("{name} {}", rate(self.value, &self.unit))
    }
}

/// The timed runs of one case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub runs: usize,
    pub input_sets: usize,
}

impl Timing {
    /// Summary of the per-run times; `samples` must not be empty.
    pub fn from_samples(mut samples: Vec<f64>, input_sets: usize) -> Result<Timing> {
        if samples.is_empty() {
            return Err(Error::config("a benchmark took no timed runs"));
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            0.5 * (samples[n / 2 - 1] + samples[n / 2])
        };
        Ok(Timing {
            median_s: median,
            min_s: samples[0],
            max_s: samples[n - 1],
            runs: n,
            input_sets,
        })
    }
}

/// How long to warm up and how many runs to time.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Warm up for at least this long (and at least one run per input set).
    pub warmup_s: f64,
    /// Time about this much in total...
    pub target_s: f64,
    /// ...but at least this many runs...
    pub min_runs: usize,
    /// ...and at most this many.
    pub max_runs: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                warmup_s: 0.0,
                target_s: 0.02,
                min_runs: 5,
                max_runs: 20,
            }
        } else {
            Plan {
                quick,
                warmup_s: 0.1,
                target_s: 0.6,
                min_runs: 15,
                max_runs: 400,
            }
        }
    }

    /// Under the cudasim simulator: one run per input set to warm up and one timed run. Its
    /// "times" come from a cost model, not a clock, so repeating a run adds nothing but minutes;
    /// the validation after timing is what the row is for there.
    pub fn simulated(quick: bool) -> Plan {
        Plan {
            quick,
            warmup_s: 0.0,
            target_s: 0.0,
            min_runs: 1,
            max_runs: 1,
        }
    }

    /// Timed runs for a kernel that takes about `per_run_s`.
    pub fn runs_for(&self, per_run_s: f64) -> usize {
        let want = (self.target_s / per_run_s.max(1e-9)).ceil();
        (want.min(self.max_runs as f64) as usize).clamp(self.min_runs, self.max_runs)
    }
}

/// Warm up, then time runs rotating over `sets` input sets; `one(set)` runs the kernel once on
/// that set and returns how long it took, in seconds.
pub fn measure(plan: &Plan, sets: usize, mut one: impl FnMut(usize) -> Result<f64>) -> Result<Timing> {
    let sets = sets.max(1);
    let (mut spent, mut done) = (0.0, 0usize);
    // Warm-up: every set at least once (first touch of its pages, the buffer pool's first fill).
    while done < sets || (spent < plan.warmup_s && done < 10 * plan.max_runs) {
        spent += one(done % sets)?;
        done += 1;
    }
    let runs = plan.runs_for(spent / done as f64);
    let samples = (0..runs)
        .map(|r| one((done + r) % sets))
        .collect::<Result<Vec<f64>>>()?;
    Timing::from_samples(samples, sets)
}

/// How many input sets to rotate through: together at least twice the last-level cache, at
/// least 2 and at most 16, and no more than `MAX_ROTATION_BYTES` in all (2 sets regardless).
pub fn input_sets(set_bytes: f64, cache_bytes: u64, quick: bool) -> usize {
    const MAX_ROTATION_BYTES: f64 = 2.0 * (1u64 << 30) as f64;
    if quick {
        return 2;
    }
    let set_bytes = set_bytes.max(1.0);
    let want = (2.0 * cache_bytes as f64 / set_bytes).ceil() as usize;
    let fit = (MAX_ROTATION_BYTES / set_bytes) as usize;
    want.min(fit).clamp(2, 16)
}

/// Whether the validation after timing passed, and what it saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Validation {
    pub passed: bool,
    /// Elements compared with the reference.
    pub elements: usize,
    /// The largest error as a fraction of its tolerance (passed: below 1).
    pub worst_error_over_tolerance: f64,
    /// The first disagreement, when it failed.
    pub failure: Option<String>,
}

impl Validation {
    pub fn from_check(r: std::result::Result<check::Checked, check::Mismatch>) -> Validation {
        match r {
            Ok(c) => Validation {
                passed: true,
                elements: c.elements,
                worst_error_over_tolerance: c.worst,
                failure: None,
            },
            Err(m) => Validation {
                passed: false,
                elements: 0,
                worst_error_over_tolerance: f64::INFINITY,
                failure: Some(m.to_string()),
            },
        }
    }
}

/// One row of the table (and of the JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub kernel: String,
    pub phase: Phase,
    pub shape: String,
    pub bound: Bound,
    #[serde(flatten)]
    pub timing: Timing,
    pub bytes: f64,
    pub flops: f64,
    /// `bytes / median`, in GB/s.
    pub gbps: f64,
    /// `flops / median`, in GFLOP/s.
    pub gflops: f64,
    pub yardstick: Option<Yardstick>,
    /// The achieved rate (GB/s or GFLOP/s, by `bound`) over the yardstick's.
    pub ratio: Option<f64>,
    pub validation: Validation,
    /// On the cudasim simulator: what the kernel did, counted (its `timing` is then the
    /// simulator's cost model, not a measurement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<SimProfile>,
}

/// A case's counters on the cudasim simulator (`backend::cuda::sim`), for the launches of one
/// run: what Nsight Compute reports on a GPU, counted exactly instead of sampled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimProfile {
    pub warp_instructions: u64,
    pub thread_instructions: u64,
    /// Warp instructions by class: int, f32, f64, memory, control, sync, move.
    pub instructions_by_class: std::collections::BTreeMap<String, u64>,
    /// Global loads: the fewest 32-byte sectors that could carry their bytes / those touched.
    pub load_efficiency: Option<f64>,
    pub store_efficiency: Option<f64>,
    /// Shared-memory wavefronts beyond the ideal, per shared request (bank conflicts).
    pub bank_conflicts_per_request: Option<f64>,
    /// Global traffic as sectors touched × 32 bytes (no cache: an upper bound on DRAM traffic).
    pub sector_bytes: u64,
    /// The bytes the case must read and write at least once (`bytes`), and the ratio to drive
    /// towards 1.
    pub traffic_ratio: Option<f64>,
    /// Sector bytes per useful flop (`flops`), for the products.
    pub bytes_per_flop: Option<f64>,
    /// The kernel with the most instructions in the case, its block size and theoretical
    /// occupancy (resident warps / the SM's maximum, from ptxas's registers and shared memory).
    pub main_kernel: Option<String>,
    pub threads_per_block: Option<u32>,
    pub registers: Option<u32>,
    pub occupancy: Option<f64>,
}

impl Record {
    pub fn new(info: &CaseInfo, timing: Timing, yardstick: Option<Yardstick>, validation: Validation) -> Record {
        let t = timing.median_s.max(f64::MIN_POSITIVE);
        let (gbps, gflops) = (info.bytes / t / 1e9, info.flops / t / 1e9);
        let achieved = match info.bound {
            Bound::Memory | Bound::Roofline => gbps,
            Bound::Compute => gflops,
        };
        let ratio = yardstick.as_ref().filter(|y| y.value > 0.0).map(|y| achieved / y.value);
        Record {
            kernel: info.kernel.to_string(),
            phase: info.phase,
            shape: info.shape.clone(),
            bound: info.bound,
            timing,
            bytes: info.bytes,
            flops: info.flops,
            gbps,
            gflops,
            yardstick,
            ratio,
            validation,
            profile: None,
        }
    }

    fn achieved(&self) -> String {
        match self.bound {
            Bound::Memory | Bound::Roofline => rate(self.gbps, "GB/s"),
            Bound::Compute => rate(self.gflops, "GFLOP/s"),
        }
    }
}

/// The machine the benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// `cpu` or `cuda`.
    pub kind: String,
    /// CPU model or GPU name.
    pub name: String,
    /// CPU threads used (rayon), or the GPU's SM count.
    pub parallelism: usize,
    /// The CPU clock /proc/cpuinfo reports, and where it came from (context only: the peak is
    /// measured, not computed from it).
    pub clock_mhz: Option<f64>,
    pub clock_source: Option<String>,
    /// The last-level cache the input rotation is sized against, and whether it was read or assumed.
    pub cache_bytes: u64,
    pub cache_source: String,
    /// Anything else worth keeping (GPU: compute capability, driver, NVRTC).
    pub detail: Option<String>,
}

/// Everything one run measured: what the JSON file holds.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub vitcore_version: &'static str,
    pub commit: Option<String>,
    pub quick: bool,
    pub filter: Option<String>,
    pub device: DeviceInfo,
    /// The measured copy bandwidth: the yardstick of the memory-bound kernels.
    pub copy_bandwidth: Yardstick,
    /// The CPU's f32 peak (CPU runs), measured: the yardstick of the matrix products.
    pub peak: Option<Yardstick>,
    /// How the peak was measured (`peak::Peak::method`).
    pub peak_method: Option<String>,
    pub records: Vec<Record>,
    /// Kernels of the CPU engine that this device has no kernel for yet.
    pub not_on_this_device: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// `1.23 TFLOP/s` above 1000 GFLOP/s, else the value with three significant digits.
fn rate(value: f64, unit: &str) -> String {
    if unit == "GFLOP/s" && value >= 1000.0 {
        return format!("{:.2} TFLOP/s", value / 1000.0);
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// A duration in us, ms or s, with four significant digits.
fn duration(s: f64) -> String {
    let (value, unit) = if s < 1e-3 {
        (s * 1e6, "us")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    let decimals = if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    format!("{value:.decimals$} {unit}")
}

const HEADER: [&str; 7] = ["kernel", "phase", "shape", "median", "achieved", "yardstick", "ratio"];
const WIDTHS: [usize; 7] = [14, 5, 34, 11, 15, 22, 7];

/// One table line: fixed columns (longer cells push the rest right rather than being cut).
fn table_line(cells: [&str; 7]) -> String {
    let mut s = String::new();
    for (cell, w) in cells.iter().zip(WIDTHS) {
        s += &format!("{cell:<w$} ");
    }
    s.trim_end().to_string()
}

pub fn table_header() -> String {
    table_line(HEADER)
}

/// The columns of a row on the cudasim simulator: counters, never times.
const SIM_HEADER: [&str; 10] = [
    "kernel",
    "phase",
    "shape",
    "warp instr",
    "ld eff",
    "st eff",
    "bank cfl",
    "traffic/min",
    "B/flop",
    "occupancy",
];

pub fn sim_table_header() -> String {
    sim_line(SIM_HEADER)
}

fn sim_line(cols: [&str; 10]) -> String {
    format!(
        "{:<14} {:<5} {:<34} {:>11} {:>7} {:>7} {:>8} {:>11} {:>7} {:>14}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8], cols[9]
    )
}

pub fn sim_table_row(r: &Record) -> String {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v));
    let p = r.profile.as_ref();
    let get = |f: &dyn Fn(&SimProfile) -> String| p.map_or("-".to_string(), f);
    let occupancy = get(&|p| match (p.occupancy, p.threads_per_block, p.registers) {
        (Some(o), Some(t), Some(regs)) => format!("{:.0}% ({t}t,{regs}r)", 100.0 * o),
        _ => "-".into(),
    });
    let valid = if r.validation.passed { "" } else { "  INVALID" };
    sim_line([
        r.kernel.as_str(),
        &r.phase.to_string(),
        &r.shape,
        &get(&|p| format!("{:.3}M", p.warp_instructions as f64 / 1e6)),
        &get(&|p| pct(p.load_efficiency)),
        &get(&|p| pct(p.store_efficiency)),
        &get(&|p| p.bank_conflicts_per_request.map_or("-".into(), |v| format!("{v:.2}"))),
        &get(&|p| p.traffic_ratio.map_or("-".into(), |v| format!("{v:.2}"))),
        &get(&|p| p.bytes_per_flop.map_or("-".into(), |v| format!("{v:.2}"))),
        &occupancy,
    ]) + valid
}

pub fn table_row(r: &Record) -> String {
    let yard = r.yardstick.as_ref().map_or("-".to_string(), Yardstick::short);
    let ratio = match (&r.ratio, r.validation.passed) {
        (_, false) => "INVALID".to_string(),
        (Some(x), true) => format!("{x:.2}"),
        (None, true) => "-".to_string(),
    };
    table_line([
        r.kernel.as_str(),
        &r.phase.to_string(),
        &r.shape,
        &duration(r.timing.median_s),
        &r.achieved(),
        &yard,
        &ratio,
    ])
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

/// What /proc/cpuinfo says about the CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuInfo {
    pub model: String,
    pub clock_mhz: Option<f64>,
    /// How the clock was obtained, in words.
    pub clock_source: String,
}

/// Parse /proc/cpuinfo text: the first `model name`, and the clock as the largest `cpu MHz`
/// (cores report their current clock; the largest is the closest to what a busy core runs at),
/// else half the `bogomips` (x86 kernels calibrate it at twice the clock).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let field = |line: &str, key: &str| -> Option<String> {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let model = text
        .lines()
        .find_map(|l| field(l, "model name"))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let max_of = |key: &str| {
        text.lines()
            .filter_map(|l| field(l, key)?.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
            .reduce(f64::max)
    };
    let (clock_mhz, clock_source) = match (max_of("cpu MHz"), max_of("bogomips")) {
        (Some(mhz), _) => (Some(mhz), "largest 'cpu MHz' in /proc/cpuinfo".to_string()),
        (None, Some(b)) => (
            Some(b / 2.0),
            "'bogomips' / 2 in /proc/cpuinfo (no 'cpu MHz')".to_string(),
        ),
        (None, None) => (
            None,
            "unknown (no 'cpu MHz' or 'bogomips' in /proc/cpuinfo)".to_string(),
        ),
    };
    CpuInfo {
        model,
        clock_mhz,
        clock_source,
    }
}

/// The CPU as /proc/cpuinfo describes it (an unknown CPU where there is no such file).
pub fn cpu_info() -> CpuInfo {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => parse_cpuinfo(&text),
        Err(_) => CpuInfo {
            model: "unknown CPU".to_string(),
            clock_mhz: None,
            clock_source: "unknown (no /proc/cpuinfo)".to_string(),
        },
    }
}

/// The nominal f32 peak in GFLOP/s that the clock /proc/cpuinfo reports implies: threads × 2 FMA
/// pipes × `lanes` (8 for AVX2, 16 for AVX-512) × 2 flops (a fused multiply-add) × clock. Printed beside the measured
/// peak for context only: a CPU that boosts above its nominal clock exceeds it, and threads that
/// share cores fall short of it.
pub fn nominal_peak_gflops(threads: usize, clock_mhz: f64, lanes: usize) -> f64 {
    threads as f64 * 2.0 * lanes as f64 * 2.0 * clock_mhz / 1e3
}

/// Parse a sysfs cache size (`32768K`, `1M`, `512`).
fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// The largest CPU cache sysfs reports for cpu0, with where it came from; 32 MiB when unknown.
pub fn cpu_last_level_cache() -> (u64, String) {
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cache");
    let found = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .flatten()
            .filter_map(|e| {
                let level = std::fs::read_to_string(e.path().join("level")).ok()?;
                let size = parse_cache_size(&std::fs::read_to_string(e.path().join("size")).ok()?)?;
                Some((level.trim().parse::<u32>().ok()?, size))
            })
            .max()
    });
    match found {
        Some((level, size)) => (size, format!("L{level} of cpu0 (sysfs)")),
        None => (32 << 20, "assumed 32 MiB (sysfs has no cache sizes)".to_string()),
    }
}

/// Print a benchmark's one-line JSON record on stdout and, when asked, write it to `json` too.
pub fn print_record(record: &impl serde::Serialize, json: Option<&Path>) -> Result<()> {
    let line = serde_json::to_string(record).map_err(|e| Error::config(format!("serialising the record: {e}")))?;
    outln!("{line}");
    if let Some(path) = json {
        std::fs::write(path, line + "\n").map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// The commit being measured: `$VITCORE_COMMIT` if set (a packed binary far from its
/// repository), else the commit the binary was built from (`build.rs`; `-dirty` when the tree
/// had uncommitted changes), else `git rev-parse HEAD` in the working directory, else unknown.
pub fn git_commit() -> Option<String> {
    if let Ok(c) = std::env::var("VITCORE_COMMIT") {
        let c = c.trim().to_string();
        if !c.is_empty() {
            return Some(c);
        }
    }
    if let Some(c) = option_env!("VITCORE_BUILD_COMMIT") {
        return Some(c.to_string());
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let c = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !c.is_empty()).then_some(c)
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

/// Prints one line of progress or of the table (to stdout: it is the command's output).
pub(crate) fn say(line: &str) {
    outln!("{line}");
}

/// `vitcore bench kernels`: run, print the table, write the JSON; fails when a validation
/// failed (after writing the JSON, which records the failure).
pub fn run_kernels(opts: &BenchOptions) -> Result<Report> {
    if let Some(path) = &opts.json {
        // Find out now, not after minutes of measuring, that the report cannot be written.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "its folder does not exist"),
            ));
        }
    }
    let report = match resolve(opts.device)? {
        Resolved::Cpu { fallback } => {
            if let Some(why) = fallback {
                say(&format!("--device auto: no usable GPU ({why}); benchmarking the CPU"));
            }
            cpu::run(opts)?
        }
        Resolved::Cuda(dev) => cuda::run(opts, &dev)?,
    };
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::config(format!("serialising the benchmark report: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        say(&format!("wrote {} records to {}", report.records.len(), path.display()));
    }
    let failed: Vec<String> = report
        .records
        .iter()
        .filter(|r| !r.validation.passed)
        .map(|r| {
            format!(
                "{} {} {}: {}",
                r.kernel,
                r.phase,
                r.shape,
                r.validation.failure.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Error::config(format!(
            "validation after timing failed for {} kernel(s) (the timings of a wrong kernel mean nothing):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )));
    }
    Ok(report)
}

/// The cases selected by the filter, or an error listing the kernels when none is.
pub(crate) fn select<T>(cases: Vec<T>, info: impl Fn(&T) -> &CaseInfo, filter: Option<&str>) -> Result<Vec<T>> {
    let mut kernels: Vec<&str> = Vec::new();
    for c in &cases {
        if !kernels.contains(&info(c).kernel) {
            kernels.push(info(c).kernel);
        }
    }
    let names = kernels.join(", ");
    let chosen: Vec<T> = cases.into_iter().filter(|c| info(c).matches(filter)).collect();
    if chosen.is_empty() {
        return Err(Error::config(format!(
            "--filter {:?} matches no benchmark (it is matched against \"kernel phase shape\"; kernels: {names})",
            filter.unwrap_or("")
        )));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let t = Timing::from_samples(vec![3.0, 1.0, 2.0], 2).unwrap();
        assert_eq!((t.median_s, t.min_s, t.max_s, t.runs), (2.0, 1.0, 3.0, 3));
        let t = Timing::from_samples(vec![4.0, 1.0, 2.0, 3.0], 1).unwrap();
        assert_eq!(t.median_s, 2.5);
        assert!(Timing::from_samples(vec![], 1).is_err());
    }

    #[test]
    fn measure_warms_up_every_set_then_rotates() {
        let plan = Plan {
            quick: true,
            warmup_s: 0.0,
            target_s: 1.0,
            min_runs: 6,
            max_runs: 6,
        };
        let mut seen = Vec::new();
        let t = measure(&plan, 3, |set| {
            seen.push(set);
            Ok(1.0 + set as f64)
        })
        .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!((t.runs, t.input_sets, t.median_s), (6, 3, 2.0));
    }

    #[test]
    fn input_sets_cover_twice_the_cache_within_limits() {
        let mib = (1u64 << 20) as f64;
        assert_eq!(input_sets(10.0 * mib, 32 << 20, false), 7); // 64 MiB / 10 MiB
        assert_eq!(input_sets(1.0, 32 << 20, false), 16);
        assert_eq!(input_sets(1500.0 * mib, 32 << 20, false), 2, "always at least two");
        assert_eq!(input_sets(10.0 * mib, 32 << 20, true), 2);
    }

    #[test]
    fn cpuinfo_clock_and_its_fallback() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.406\nbogomips\t: 4890.81\n\
                    processor\t: 1\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2500.000\n";
        let c = parse_cpuinfo(text);
        assert_eq!((c.model.as_str(), c.clock_mhz), ("AMD EPYC", Some(2500.0)));
        assert!(c.clock_source.contains("cpu MHz"));
        let c = parse_cpuinfo("model name : X\nbogomips : 4890.81\n");
        assert_eq!(c.clock_mhz, Some(2445.405));
        assert!(c.clock_source.contains("bogomips"));
        assert_eq!(parse_cpuinfo("").clock_mhz, None);
        // 2 threads x 2 pipes x 8 lanes x 2 flops x 2.45 GHz.
        assert!((nominal_peak_gflops(2, 2450.0, 8) - 156.8).abs() < 1e-9);
        assert!((nominal_peak_gflops(2, 2450.0, 16) - 313.6).abs() < 1e-9);
    }

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("lots"), None);
    }

    #[test]
    fn records_compare_with_the_right_yardstick() {
        let timing = Timing::from_samples(vec![0.5], 2).unwrap();
        let ok = Validation::from_check(Ok(check::Checked {
            elements: 1,
            worst: 0.0,
        }));
        let mem = CaseInfo {
            kernel: "gelu",
            phase: Phase::Fwd,
            shape: "x".into(),
            bytes: 10e9,
            flops: 1e9,
            bound: Bound::Memory,
        };
        let r = Record::new(&mem, timing.clone(), Some(Yardstick::bandwidth(40.0)), ok.clone());
        assert_eq!((r.gbps, r.gflops, r.ratio), (20.0, 2.0, Some(0.5)));
        let comp = CaseInfo {
            bound: Bound::Compute,
            ..mem
        };
        let r = Record::new(&comp, timing, Some(Yardstick::flops("CPU peak", 8.0)), ok);
        assert_eq!(r.ratio, Some(0.25));
        assert!(table_row(&r).contains("2.00 GFLOP/s"), "{}", table_row(&r));
    }

    #[test]
    fn roofline_cases_take_the_tighter_bound() {
        let case = CaseInfo {
            kernel: "attention",
            phase: Phase::Fwd,
            shape: "x".into(),
            bytes: 1e9,
            flops: 20e9,
            bound: Bound::Roofline,
        };
        // 1 GB at 10 GB/s is 0.1 s; 20 GFLOP at 100 GFLOP/s is 0.2 s: compute bounds it.
        assert_eq!(case.resolve(10.0, Some(100.0)).bound, Bound::Compute);
        assert_eq!(case.resolve(10.0, Some(400.0)).bound, Bound::Memory);
        assert_eq!(case.resolve(10.0, None).bound, Bound::Memory);
        let fixed = CaseInfo {
            bound: Bound::Compute,
            ..case
        };
        assert_eq!(fixed.resolve(10.0, Some(1e6)).bound, Bound::Compute);
    }

    #[test]
    fn durations_keep_four_significant_digits() {
        assert_eq!(duration(32.94e-6), "32.94 us");
        assert_eq!(duration(118.4061e-3), "118.4 ms");
        assert_eq!(duration(1.5e-3), "1.500 ms");
        assert_eq!(duration(2.0), "2.000 s");
    }
}
