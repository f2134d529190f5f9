//! `vitcore` — the command line. All the work is in the library (`vitcore::cli`).

use clap::Parser;

fn main() {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        eprintln!("error: this build of vitcore uses AVX2 and FMA, which this CPU lacks; rebuild with RUSTFLAGS=\"-C target-cpu=x86-64\"");
        std::process::exit(2);
    }
    let cli = vitcore::cli::Cli::parse();
    if let Err(e) = vitcore::cli::run(cli) {
        match e {
            // Not a failure of the user's: the run was saved and the message says how to go on.
            vitcore::Error::Interrupted { .. } => vitcore::errln!("{e}"),
            _ => vitcore::errln!("error: {e}"),
        }
        std::process::exit(e.exit_code());
    }
}
