//! Choosing the device: `--device auto|cpu|cuda`.
//!
//! * `cpu`: the CPU, always.
//! * `cuda`: the GPU, or `Error::Device` saying why it cannot be used (no driver, no NVRTC, no
//!   device, a kernel that does not compile). Never a panic.
//! * `auto`: the GPU when it can be used, else the CPU together with a one-line reason the caller
//!   prints (so a run on a machine without a GPU says why it is slow rather than failing).

use super::device::{cuda_available, CudaDevice};
use crate::backend::Device;
use crate::error::{Error, Result};
use std::sync::Arc;

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU if one can be used, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<DeviceChoice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            _ => Err(Error::config(format!(
                "unknown device `{s}` (expected auto, cpu or cuda)"
            ))),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

/// What the choice resolved to.
#[derive(Clone, Debug)]
pub enum Resolved {
    /// The CPU; `fallback` is the one-line reason when `auto` could not use the GPU.
    Cpu { fallback: Option<String> },
    /// The (process-wide) GPU, kernels compiled and loaded.
    Cuda(Arc<CudaDevice>),
}

impl Resolved {
    pub fn is_cuda(&self) -> bool {
        matches!(self, Resolved::Cuda(_))
    }
    /// Where tensors go for this choice.
    pub fn device(&self) -> Device {
        match self {
            Resolved::Cpu { .. } => Device::Cpu,
            Resolved::Cuda(_) => Device::Cuda,
        }
    }
    /// One line for the log: which device, and why when `auto` fell back to the CPU.
    pub fn describe(&self) -> String {
        match self {
            Resolved::Cpu { fallback: None } => "device: cpu".to_string(),
            Resolved::Cpu { fallback: Some(why) } => format!("device: cpu (no usable GPU: {why})"),
            Resolved::Cuda(d) => format!("device: cuda, {}", d.describe()),
        }
    }
}

/// Resolve a device choice (see the module doc). Only `cuda` can fail.
pub fn resolve(choice: DeviceChoice) -> Result<Resolved> {
    match choice {
        DeviceChoice::Cpu => Ok(Resolved::Cpu { fallback: None }),
        DeviceChoice::Cuda => {
            cuda_available().map_err(|why| Error::Device(format!("--device cuda: {why}")))?;
            let dev =
                CudaDevice::global().map_err(|e| Error::Device(format!("--device cuda: {}", strip_prefix(&e))))?;
            Ok(Resolved::Cuda(dev))
        }
        DeviceChoice::Auto => Ok(
            match cuda_available().and_then(|()| CudaDevice::global().map_err(|e| strip_prefix(&e))) {
                Ok(dev) => Resolved::Cuda(dev),
                Err(why) => Resolved::Cpu { fallback: Some(why) },
            },
        ),
    }
}

/// [`resolve`], then say in one line on stderr what was chosen (and why the CPU, under `auto`):
/// stderr, so that stdout stays the command's result (predict's lines are read by scripts).
pub fn resolve_and_report(choice: DeviceChoice) -> Result<Resolved> {
    let resolved = resolve(choice)?;
    crate::errln!("{}", resolved.describe()); // a closed stderr must not panic (crate::output)
    Ok(resolved)
}

fn strip_prefix(e: &Error) -> String {
    match e {
        Error::Device(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for (s, c) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda),
            ("gpu", DeviceChoice::Cuda),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), c);
        }
        assert_eq!(DeviceChoice::Cuda.to_string(), "cuda");
        let e = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(e.contains("auto, cpu or cuda"), "{e}");
    }

    #[test]
    fn resolve_never_panics() {
        assert!(matches!(
            resolve(DeviceChoice::Cpu).unwrap(),
            Resolved::Cpu { fallback: None }
        ));
        let auto = resolve(DeviceChoice::Auto).unwrap();
        match resolve(DeviceChoice::Cuda) {
            Ok(r) => assert!(r.is_cuda() && auto.is_cuda()),
            Err(e) => {
                // No GPU here: cuda is a clear device error, auto the CPU with one line of why.
                let msg = e.to_string();
                assert!(msg.starts_with("device: --device cuda: "), "{msg}");
                match auto {
                    Resolved::Cpu { fallback: Some(why) } => assert!(!why.is_empty() && !why.contains('\n'), "{why}"),
                    other => panic!("auto without a GPU gave {other:?}"),
                }
            }
        }
    }
}
