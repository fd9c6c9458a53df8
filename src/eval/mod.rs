//! Model evaluation: perplexity, KL divergence to a base model, importance-matrix collection.

pub mod imatrix;
pub mod kld;
pub mod perplexity;
