//! Seeing inside a model and its data: the commands `summary`, `show patches`, `attention` and
//! `audit` (the pictures of a run itself are `crate::train::pictures`).
//!
//! - [`input`]: one image from a PNG, or row N of a CSV, checked against a model;
//! - [`patches`]: an image cut into the model's patches, and the token sequence it becomes;
//! - [`attention`]: what the class token looks at, per head of the last block and rolled out
//!   through all blocks (Abnar & Zuidema, 2020);
//! - [`audit`]: the training images whose label is most likely wrong, by the area under the
//!   margin of the run's training (Pleiss et al., 2020).

pub mod attention;
pub mod audit;
pub mod input;
pub mod patches;
