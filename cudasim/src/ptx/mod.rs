//! PTX: tokenizer, parser and the decoded instruction set.

pub mod ir;
pub mod lex;
pub mod parse;

pub use parse::{parse_module, LoadError};
