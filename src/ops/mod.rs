//! The ops. Each file is one op: its math (forward and the derivation of the backward, with
//! shapes), its kernels (device-dispatching entry points, CPU code beside them), its autograd
//! rule, and the `Graph` method that records it.

pub mod add;
pub mod attention;
pub mod concat;
pub mod cross_entropy;
pub mod dropout;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod patchify;
pub mod scale;
pub mod shape;
pub mod softmax;

pub use gelu::GeluKind;
