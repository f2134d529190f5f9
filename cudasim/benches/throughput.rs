//! How fast cudasim simulates: thread-instructions per second (and warp-instructions per second)
//! on three kernels of the kinds a ViT training step runs — an element-wise map with `erff`, a
//! warp-per-row softmax with shuffles, a shared-memory tiled matmul — with every check on (the
//! default) and with checks off. Each launch is timed whole (median of 5), then its output is
//! validated against a host computation, as vitcore's kernel benchmark does.
//!
//! ```sh
//! cargo bench -p cudasim --bench throughput
//! ```
//! The target (issue `cudasim`): ≥ 100 million thread-instructions per second on the 2-core build
//! machine. Results go to BENCHMARKS.md with the machine and commit.

use cudasim::{Arg, Checks, Device, DeviceModel, LaunchConfig, RunOptions, Stats};
use std::time::Instant;

const PTX: &str = include_str!("kernels.ptx");

struct Case {
    name: &'static str,
    cfg: LaunchConfig,
    args: Vec<Arg>,
    out: (u64, usize),
    check: Box<dyn Fn(&[f32]) -> f64>,
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1e-3))
        .fold(0.0, f64::max)
}

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 is too coarse for a 1e-5 check: sum the Maclaurin series for
    // |x| ≤ 3 (converges; 60 terms reach f64 precision), erfc's continued fraction beyond.
    if x.abs() > 3.0 {
        let t = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (t + f);
        }
        let erfc = (-t * t).exp() / std::f64::consts::PI.sqrt() / (t + f);
        return (1.0 - erfc).copysign(x);
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn cases(dev: &Device) -> Vec<Case> {
    let mut v = Vec::new();
    // GELU over 1M elements.
    let n = 1 << 20;
    let x = rand(n, 1);
    let (px, py) = (dev.upload_f32(&x), dev.alloc(n as u64 * 4).unwrap());
    let want: Vec<f64> = x
        .iter()
        .map(|&v| 0.5 * v as f64 * (1.0 + erf(v as f64 / 2f64.sqrt())))
        .collect();
    v.push(Case {
        name: "gelu [1M]",
        cfg: LaunchConfig {
            grid: [dev.model.sm_count * 32, 1, 1],
            block: [256, 1, 1],
            dynamic_shared: 0,
        },
        args: vec![Arg::U64(px), Arg::U64(py), Arg::I64(n as i64)],
        out: (py, n),
        check: Box::new(move |g| max_rel_err(g, &want)),
    });
    // Softmax over 4096 rows of 256.
    let (rows, cols) = (4096usize, 256usize);
    let x = rand(rows * cols, 2);
    let (px, py) = (dev.upload_f32(&x), dev.alloc((rows * cols) as u64 * 4).unwrap());
    let mut want = vec![0f64; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for j in 0..cols {
            want[r * cols + j] = (row[j] as f64 - m).exp() / s;
        }
    }
    v.push(Case {
        name: "softmax [4096,256]",
        cfg: LaunchConfig {
            grid: [(rows / 4) as u32, 1, 1],
            block: [128, 1, 1],
            dynamic_shared: 0,
        },
        args: vec![Arg::U64(px), Arg::U64(py), Arg::I32(rows as i32), Arg::I32(cols as i32)],
        out: (py, rows * cols),
        check: Box::new(move |g| max_rel_err(g, &want)),
    });
    // Matmul 256³.
    let n = 256usize;
    let (a, b) = (rand(n * n, 3), rand(n * n, 4));
    let (pa, pb, pc) = (
        dev.upload_f32(&a),
        dev.upload_f32(&b),
        dev.alloc((n * n) as u64 * 4).unwrap(),
    );
    let mut want = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k] as f64;
            for j in 0..n {
                want[i * n + j] += aik * b[k * n + j] as f64;
            }
        }
    }
    v.push(Case {
        name: "matmul 256x256x256",
        cfg: LaunchConfig {
            grid: [16, 16, 1],
            block: [16, 16, 1],
            dynamic_shared: 0,
        },
        args: vec![Arg::U64(pa), Arg::U64(pb), Arg::U64(pc), Arg::I32(n as i32)],
        out: (pc, n * n),
        // Absolute error against the row's scale (sums of 256 products of magnitude ≤ 4).
        check: Box::new(move |g| {
            g.iter()
                .zip(&want)
                .map(|(&x, &w)| (x as f64 - w).abs() / 64.0)
                .fold(0.0, f64::max)
        }),
    });
    v
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("cudasim throughput: {threads} host threads, T4 model (40 SMs); median of 5 launches each");
    println!(
        "{:<22} {:>8} {:>14} {:>12} {:>16} {:>14} {:>10}",
        "kernel", "checks", "thread-instr", "median ms", "thread-instr/s", "warp-instr/s", "max err"
    );
    for (label, checks) in [("all", Checks::ALL), ("off", Checks::NONE)] {
        let dev = Device::new(
            DeviceModel::t4(),
            RunOptions {
                checks,
                ..RunOptions::default()
            },
        );
        let m = dev.load_ptx(PTX).expect("benchmark PTX loads");
        for c in cases(&dev) {
            let kernel = c.name.split(' ').next().unwrap();
            let mut times = Vec::new();
            let mut stats = Stats::default();
            for _ in 0..5 {
                let t = Instant::now();
                stats = dev
                    .launch(&m, kernel, c.cfg, &c.args)
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name));
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let med = times[2];
            let err = (c.check)(&dev.download_f32(c.out.0, c.out.1));
            let ok = if err < 1e-4 { "" } else { "  INVALID" };
            println!(
                "{:<22} {:>8} {:>14} {:>12.2} {:>14.1} M {:>12.1} M {:>10.1e}{ok}",
                c.name,
                label,
                stats.thread_instructions,
                med * 1e3,
                stats.thread_instructions as f64 / med / 1e6,
                stats.warp_instructions as f64 / med / 1e6,
                err
            );
            assert!(ok.is_empty(), "{}: output does not match the host computation", c.name);
        }
    }
}
