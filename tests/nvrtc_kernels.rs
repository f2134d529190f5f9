//! Compiles every CUDA kernel file with NVRTC for sm_75 (T4) and sm_90 (H100): no GPU needed.
//!
//! Fails on any compile error and on any register spill in ptxas's report. Without NVRTC it
//! prints `skipped: <why>` and passes, unless `VITCORE_REQUIRE_NVRTC=1` (CI, after
//! `.ci/nvrtc-setup.sh`), where a missing NVRTC is a failure.

use vitcore::backend::cuda::nvrtc::{self, KERNEL_SOURCES};

const ARCHS: [&str; 2] = ["sm_75", "sm_90"];

fn required() -> bool {
    std::env::var("VITCORE_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// `true` when NVRTC works; otherwise prints why and returns `false` (or panics when required).
fn nvrtc_or_skip() -> bool {
    match nvrtc::nvrtc_available() {
        Ok(()) => true,
        Err(why) if required() => panic!("VITCORE_REQUIRE_NVRTC=1 but NVRTC is unusable: {why}"),
        Err(why) => {
            println!("skipped: {why}");
            false
        }
    }
}

#[test]
fn nvrtc_compiles_every_kernel_for_sm75_and_sm90_without_spills() {
    if !nvrtc_or_skip() {
        return;
    }
    let (maj, min) = nvrtc::nvrtc_version().unwrap_or((0, 0));
    println!("NVRTC {maj}.{min}, include path {:?}", nvrtc::include_dir());
    println!("supported architectures: {:?}", nvrtc::supported_archs());
    println!(
        "{:<16} {:<30} {:>6} {:>5} {:>6} {:>6} {:>7}",
        "file", "kernel", "arch", "regs", "smem", "stack", "spills"
    );
    let mut problems = Vec::new();
    let mut kernels = 0;
    for (file, src) in KERNEL_SOURCES {
        let expected = nvrtc::kernel_names(src);
        assert!(!expected.is_empty(), "{file} defines no extern \"C\" __global__ kernel");
        for arch in ARCHS {
            let c = match nvrtc::compile_cubin(file, src, arch) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{e}"));
                    continue;
                }
            };
            if !c.cubin.starts_with(b"\x7fELF") {
                problems.push(format!("{file} {arch}: the CUBIN is not an ELF image"));
            }
            for name in &expected {
                match c.kernels.iter().find(|k| &k.name == name) {
                    None => problems.push(format!("{file} {arch}: no ptxas report for kernel {name}:\n{}", c.log)),
                    Some(k) => {
                        kernels += 1;
                        println!(
                            "{file:<16} {:<30} {arch:>6} {:>5} {:>6} {:>6} {:>3}/{:<3}",
                            k.name, k.registers, k.shared_bytes, k.stack_bytes, k.spill_stores, k.spill_loads
                        );
                    }
                }
            }
            for k in c.spills() {
                problems.push(format!(
                    "{file} {arch}: kernel {} spills ({} bytes stored, {} loaded)",
                    k.name, k.spill_stores, k.spill_loads
                ));
            }
            // Warnings are not errors, but show them.
            for line in c.log.lines().filter(|l| l.contains("warning")) {
                println!("  {file} {arch}: {line}");
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!(
        "{kernels} kernel builds ({} files × {} architectures), no spills",
        KERNEL_SOURCES.len(),
        ARCHS.len()
    );
}

#[test]
fn nvrtc_reports_a_compile_error_with_its_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let bad = "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }";
    let e = nvrtc::compile_cubin("broken.cu", bad, "sm_75").unwrap_err().to_string();
    assert!(e.contains("undefined_name") && e.contains("broken.cu"), "{e}");
}

#[test]
fn nvrtc_finds_the_cuda_headers_when_required() {
    if !nvrtc_or_skip() {
        return;
    }
    // CI sets VITCORE_NVRTC_INCLUDE; elsewhere the headers are optional (the kernels need none).
    match nvrtc::include_dir() {
        Some(d) => assert!(
            d.join("cuda_fp16.h").is_file() || d.join("cuda_runtime.h").is_file(),
            "{d:?}"
        ),
        None if required() => panic!("VITCORE_REQUIRE_NVRTC=1 but no CUDA include folder was found"),
        None => println!("no CUDA include folder found (not needed by the kernels)"),
    }
}
