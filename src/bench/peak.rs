//! The CPU's f32 peak, measured: the yardstick of the matrix products in `vitcore bench kernels
//! --device cpu`.
//!
//! A peak computed from the nominal clock in /proc/cpuinfo is not a peak: a CPU that boosts above
//! it lets the GEMM beat the "peak" (ratios of 1.24–1.30 were seen on an AVX-512 Xeon), and one
//! that throttles under vector load, or whose threads share cores, makes every ratio look worse
//! than it is. So the peak is measured, with the instructions the GEMM's micro-kernel is built
//! from ([`Isa::best`]): every rayon thread at once runs [`CHAINS`] independent chains of fused
//! multiply-adds (AVX-512 `vfmadd…ps zmm`, 16 lanes, or AVX2+FMA `ymm`, 8 lanes, as
//! `backend::cpu::gemm`'s micro-kernel; plain `f32::mul_add` where neither runs) for about
//! 0.1 s, and the best of five such runs counts (on a shared host the clock wanders by several per cent from run to run). Enough chains are in flight to cover the FMA latency times the FMA units' issue
//! rate (4 cycles × 2 per cycle on Intel since Skylake, 4 × 2 on AMD Zen), so the loop runs at
//! the units' throughput, which is what a GEMM's inner loop can at best reach.
//!
//! The rate is counted per second of the threads' own CPU time ([`cores_rate`]), so a build
//! running beside the benchmark does not lower the peak (it lowers the kernels' rates instead,
//! which is the truth about that run): the ratios stay at or below 1 on a busy machine too.

use crate::backend::cpu::gemm::Isa;
use std::hint::black_box;
use std::time::Instant;

/// Independent accumulator chains per thread: at least FMA latency × FMAs issued per cycle
/// (8 on current x86 cores), and with the two operands they fit the 16 vector registers.
pub const CHAINS: usize = 12;

/// f32 lanes of one chain in `isa`: a 512-bit vector for AVX-512, else 256 bits (the portable
/// loop is counted as 8 lanes, what the compiler makes of it for x86-64-v3).
pub fn lanes(isa: Isa) -> usize {
    if isa == Isa::Avx512 {
        16
    } else {
        8
    }
}

/// A measured peak and how it was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    pub gflops: f64,
    /// One line for the report: the threads, the instructions, the duration, the runs.
    pub method: String,
}

/// Floating-point operations of `iters` iterations of the loop on each of `threads` threads:
/// [`CHAINS`] FMAs of `lanes` lanes per iteration, two operations each.
pub fn loop_flops(threads: usize, iters: u64, lanes: usize) -> f64 {
    threads as f64 * iters as f64 * (CHAINS * lanes * 2) as f64
}

/// The loop in `isa` (one this CPU runs: [`Isa::available`]): lane `l` of chain `c` starts at
/// `init + c` and becomes `acc·mul + add` (one fused multiply-add), `iters` times; returns every
/// lane's final value, chain by chain ([`CHAINS`] × [`lanes`]). The chains start apart so the
/// compiler cannot merge them, and `mul`, `add` should come through `black_box` for the same
/// reason (an FMA by a constant 1 may be folded into an add).
pub fn fma_chains(isa: Isa, iters: u64, init: f32, mul: f32, add: f32) -> Vec<f32> {
    assert!(
        Isa::available().contains(&isa),
        "fma_chains: this CPU cannot run {isa:?}"
    );
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has the instructions (asserted just above).
        Isa::Avx512 => return unsafe { fma_chains_avx512(iters, init, mul, add) },
        Isa::Avx2 => return unsafe { fma_chains_avx2(iters, init, mul, add) },
        Isa::Portable => {}
    }
    fma_chains_portable(iters, init, mul, add, lanes(isa))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64, init: f32, mul: f32, add: f32) -> Vec<f32> {
    use std::arch::x86_64::*;
    let (m, a) = (_mm256_set1_ps(mul), _mm256_set1_ps(add));
    let mut acc: [__m256; CHAINS] = std::array::from_fn(|c| _mm256_set1_ps(init + c as f32));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, m, a);
        }
    }
    let mut out = vec![0.0f32; CHAINS * 8];
    for (chunk, v) in out.chunks_exact_mut(8).zip(acc) {
        // SAFETY: `chunk` holds exactly 8 floats; storeu needs no alignment.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) };
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64, init: f32, mul: f32, add: f32) -> Vec<f32> {
    use std::arch::x86_64::*;
    let (m, a) = (_mm512_set1_ps(mul), _mm512_set1_ps(add));
    let mut acc: [__m512; CHAINS] = std::array::from_fn(|c| _mm512_set1_ps(init + c as f32));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, m, a);
        }
    }
    let mut out = vec![0.0f32; CHAINS * 16];
    for (chunk, v) in out.chunks_exact_mut(16).zip(acc) {
        // SAFETY: `chunk` holds exactly 16 floats; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), v) };
    }
    out
}

fn fma_chains_portable(iters: u64, init: f32, mul: f32, add: f32, lanes: usize) -> Vec<f32> {
    let mut acc: Vec<f32> = (0..CHAINS * lanes).map(|i| init + (i / lanes) as f32).collect();
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(mul, add);
        }
    }
    acc
}

/// The instructions [`fma_chains`] runs in `isa`, in words.
pub fn instructions(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "AVX-512 _mm512_fmadd_ps, 16 lanes, the GEMM micro-kernel's instructions",
        Isa::Avx2 => "AVX2+FMA _mm256_fmadd_ps, 8 lanes, the GEMM micro-kernel's instructions",
        Isa::Portable => "f32::mul_add as compiled for this target, as the GEMM's portable kernel",
    }
}

/// This thread's CPU time in seconds: the time it actually ran, not the time other processes
/// had its core. `None` where the platform has no per-thread clock.
#[cfg(unix)]
fn thread_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(unix))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

/// Run `iters` iterations on the calling thread: the CPU seconds it took, else the wall seconds.
fn run_one(iters: u64, init: f32) -> f64 {
    let (mul, add) = (black_box(0.999f32), black_box(1e-3f32));
    let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
    black_box(fma_chains(Isa::best(), black_box(iters), init, mul, add));
    match (cpu, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall.elapsed().as_secs_f64(),
    }
}

/// The rate of the cores the threads ran on, in GFLOP/s, from `iters` iterations on each of
/// `threads` threads that took `seconds` of their own CPU time in all: flops per CPU-second,
/// times the CPUs the threads can occupy at once. Threads that share a core (SMT) each run at a
/// fraction of its rate for every second they hold it, and more threads than CPUs take turns, so
/// the product is what the cores deliver together, whatever else the machine ran meanwhile.
pub fn cores_rate(threads: usize, cpus: usize, iters: u64, lanes: usize, seconds: f64) -> f64 {
    loop_flops(threads, iters, lanes) / seconds.max(1e-12) * threads.min(cpus).max(1) as f64 / 1e9
}

/// Measure the peak: calibrate the loop to about `seconds` on one thread, then run it on every
/// rayon thread at once `runs` times and keep the best rate.
pub fn measure(seconds: f64, runs: usize) -> Peak {
    let threads = rayon::current_num_threads();
    let cpus = std::thread::available_parallelism().map_or(threads, |n| n.get());
    let probe: u64 = 1 << 18;
    let per_iter = run_one(probe, 0.0).max(1e-9) / probe as f64;
    let iters = ((seconds / per_iter) as u64).max(probe);
    let runs = runs.max(1);
    let mut best = 0.0f64;
    for _ in 0..runs {
        let per_thread = rayon::broadcast(|ctx| run_one(iters, ctx.index() as f32));
        best = best.max(cores_rate(
            threads,
            cpus,
            iters,
            lanes(Isa::best()),
            per_thread.iter().sum(),
        ));
    }
    let clock = if thread_cpu_seconds().is_some() {
        "per second of the threads' own CPU time (time other processes took is not counted)"
    } else {
        "per second of wall time"
    };
    Peak {
        gflops: best,
        method: format!(
            "measured: {threads} threads (rayon) at once, each {CHAINS} independent chains of FMAs \
             ({}) for about {:.2} s, best of {runs}, {clock}, x {} CPUs",
            instructions(Isa::best()),
            iters as f64 * per_iter,
            threads.min(cpus).max(1)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chains_compute_what_they_claim() {
        for isa in Isa::available() {
            let l = lanes(isa);
            // acc·1 + 1, 1000 times: chain c ends at c + 1000, exactly (small integers are exact).
            let out = fma_chains(isa, 1000, 0.0, black_box(1.0), black_box(1.0));
            assert_eq!(out.len(), CHAINS * l, "{isa:?}");
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(v, (i / l) as f32 + 1000.0, "{isa:?} lane {i}");
            }
            // acc·0.5 + 1 converges to 2 from any start.
            let out = fma_chains(isa, 200, 5.0, black_box(0.5), black_box(1.0));
            assert!(out.iter().all(|&v| v == 2.0), "{isa:?} {out:?}");
            // The portable loop agrees with the vector one bit for bit (both fused: one rounding).
            let (a, b) = (
                fma_chains(isa, 777, 0.25, 0.999, 1e-3),
                fma_chains_portable(777, 0.25, 0.999, 1e-3, l),
            );
            assert_eq!(a, b, "{isa:?}");
        }
    }

    #[test]
    fn flops_count_two_per_lane_per_chain_per_iteration() {
        assert_eq!(loop_flops(1, 1, 8), (CHAINS * 8 * 2) as f64);
        assert_eq!(loop_flops(4, 1000, 8), 4.0 * 1000.0 * 12.0 * 8.0 * 2.0);
        assert_eq!(loop_flops(4, 1000, 16), 4.0 * 1000.0 * 12.0 * 16.0 * 2.0);
    }

    #[test]
    fn the_rate_counts_the_cpus_the_threads_can_hold() {
        // f: one thread's work, in GFLOP.
        let f = loop_flops(1, 1000, 8) / 1e9;
        // Two threads on two CPUs, 1 s of CPU time each: each CPU ran at f per second, 2f in all.
        assert!((cores_rate(2, 2, 1000, 8, 2.0) - 2.0 * f).abs() < 1e-12);
        // Four threads taking turns on two CPUs, 1 s each: still f per CPU-second on two CPUs.
        assert!((cores_rate(4, 2, 1000, 8, 4.0) - 2.0 * f).abs() < 1e-12);
        // One thread on a machine of eight, done in 0.5 s: one CPU at 2f.
        assert!((cores_rate(1, 8, 1000, 8, 0.5) - 2.0 * f).abs() < 1e-12);
    }

    #[test]
    fn a_short_measurement_reports_its_method() {
        let p = measure(0.002, 1);
        assert!(p.gflops.is_finite() && p.gflops > 0.0, "{p:?}");
        assert!(p.method.contains("best of 1"), "{}", p.method);
        assert!(p.method.contains(instructions(Isa::best())), "{}", p.method);
    }
}
