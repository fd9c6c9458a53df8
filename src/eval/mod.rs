//! Model evaluation: perplexity (KL divergence to come).

pub mod perplexity;
