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
