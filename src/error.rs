//! One error type for the whole crate.
//!
//! Every failure a user can cause (a shape mismatch, a malformed file, a missing GPU) becomes an
//! [`Error`] whose message says *what* was wrong and *where*: the op and both shapes, or the file,
//! line and the expected-vs-found values. The binary prints it and exits non-zero; nothing panics.

use std::fmt;
use std::path::{Path, PathBuf};

/// The crate's error.
#[derive(Debug)]
pub enum Error {
    /// An op was given tensors whose shapes do not fit together.
    Shape {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        why: String,
    },
    /// A file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A file was read but its content is wrong (`line` is 1-based when known).
    Data {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },
    /// A checkpoint does not match the model it is loaded into.
    Checkpoint { path: PathBuf, msg: String },
    /// A requested device cannot be used.
    Device(String),
    /// A bad argument or configuration value.
    Config(String),
    /// Training stopped on SIGINT or SIGTERM after saving; `message` says how to resume. The
    /// process exits with `128 + signal` (130 for Ctrl-C, 143 for SIGTERM), as a shell expects.
    Interrupted { signal: i32, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, lhs: &[usize], rhs: &[usize], why: impl Into<String>) -> Self {
        Error::Shape {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            why: why.into(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn data(path: impl AsRef<Path>, line: Option<usize>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
    pub fn checkpoint(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// The process exit status for this error: `128 + signal` for [`Error::Interrupted`], else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted { signal, .. } => 128 + signal,
            _ => 1,
        }
    }
}

/// `text` for quoting in a message: as is when short, else its first `max` characters, an
/// ellipsis and the full length, so that one bad line of a file (a semicolon-separated CSV header
/// is one 7 KB "field") does not fill the terminal.
pub fn excerpt(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}... ({n} characters)")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, lhs, rhs, why } => {
                write!(f, "{op}: incompatible shapes {lhs:?} and {rhs:?}: {why}")
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Data { path, line, msg } => match line {
                Some(l) => write!(f, "{}:{l}: {msg}", path.display()),
                None => write!(f, "{}: {msg}", path.display()),
            },
            Error::Checkpoint { path, msg } => {
                write!(f, "checkpoint {}: {msg}", path.display())
            }
            Error::Device(msg) => write!(f, "device: {msg}"),
            Error::Config(msg) => write!(f, "{msg}"),
            Error::Interrupted { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_long_text_and_says_how_long_it_was() {
        assert_eq!(excerpt("label,pixel0", 20), "label,pixel0");
        let long = "label;".repeat(1000);
        let e = excerpt(&long, 30);
        assert!(
            e.starts_with("label;label;") && e.ends_with("... (6000 characters)"),
            "{e}"
        );
        assert!(e.len() < 60, "{e}");
        // Cut on characters, not bytes.
        assert_eq!(excerpt("ééééé", 2), "éé... (5 characters)");
    }
}
