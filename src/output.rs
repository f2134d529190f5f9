//! The lines vitcore prints, written so that a closed pipe ends them quietly instead of panicking.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`vitcore eval run | head -1`):
//! Rust ignores SIGPIPE, so the write fails with EPIPE and the macro turns that into a panic and a
//! backtrace. Every line of vitcore goes through [`outln!`] (stdout) or [`errln!`] (stderr)
//! instead, and what happens when stdout cannot be written is a choice made once per command:
//!
//! - [`WhenClosed::Exit`] (the default: `eval`, `predict`, `bench`): exit at once with status 0,
//!   as if the output had simply ended; this is what `head` and `grep -m1` expect (and what
//!   ripgrep does). Files a command writes are written before its last lines are printed.
//! - [`WhenClosed::Stderr`] (`train`): go on, and print the remaining lines on stderr instead, after
//!   one line saying so. A training run is minutes or hours of work whose real output is its run
//!   folder; losing it because `| head` closed the pipe would be the worst of the choices.
//!
//! A failed write to stderr is ignored (there is nowhere left to say anything).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// What to do when stdout can no longer be written (its reader closed the pipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenClosed {
    /// Exit quietly with status 0.
    Exit,
    /// Keep going; the remaining stdout lines go to stderr.
    Stderr,
}

static KEEP_GOING: AtomicBool = AtomicBool::new(false);
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Choose what a closed stdout does for the rest of the process (see the module documentation).
pub fn when_stdout_closed(choice: WhenClosed) {
    KEEP_GOING.store(choice == WhenClosed::Stderr, Ordering::SeqCst);
}

/// Write one line to stdout (what [`outln!`] calls).
pub fn out_line(args: fmt::Arguments) {
    if !STDOUT_CLOSED.load(Ordering::SeqCst) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{args}").and_then(|()| out.flush()).is_ok() {
            return;
        }
        STDOUT_CLOSED.store(true, Ordering::SeqCst);
        if !KEEP_GOING.load(Ordering::SeqCst) {
            std::process::exit(0);
        }
        err_line(format_args!(
            "stdout is closed: training goes on to its end, and its lines follow here on stderr"
        ));
    }
    err_line(args);
}

/// Write one line to stderr, ignoring failure (what [`errln!`] calls).
pub fn err_line(args: fmt::Arguments) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` that survives a closed stdout (see [`crate::output`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::out_line(format_args!($($arg)*)) };
}

/// `eprintln!` that ignores a closed stderr (see [`crate::output`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::err_line(format_args!($($arg)*)) };
}
