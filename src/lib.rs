//! kiln: GGUF-compatible LLM inference for laptop CPUs.

pub mod calib;
pub mod chat;
pub mod convert;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod sample;
#[cfg(test)]
mod testing;
pub mod threadpool;
pub mod tokenizer;

pub use ggml_compat;
