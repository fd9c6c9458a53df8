//! Model evaluation: perplexity and KL divergence to a base model.

pub mod kld;
pub mod perplexity;
