//! Synthetic data sets, rendered offline, so the photo workflow can be tried and tested without
//! downloading anything: `vitcore make-dataset inspection DIR` ([`inspection`]).

pub mod inspection;
