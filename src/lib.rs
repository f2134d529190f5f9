//! # vitcore
//!
//! A from-scratch tensor engine that trains Vision Transformers: f32 tensors, a reverse-mode
//! autograd over a recorded tape, a rayon CPU backend, and the ViT built from those pieces.
//!
//! Reading order for learning the ViT op by op: [`tensor`], [`autograd`], then each file of
//! [`ops`] (every one opens with its forward math and the derivation of its backward).

// First, so that its `outln!` / `errln!` macros are in scope in every module below.
#[macro_use]
pub mod output;

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod inspect;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pretrained;
pub mod rng;
pub mod synth;
pub mod tensor;
pub mod train;
pub mod viz;

pub use autograd::{Gradients, Graph, Op, ParamId, ParamStore, Var};
pub use backend::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
