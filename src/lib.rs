//! kiln: GGUF-compatible LLM inference for laptop CPUs.

pub mod kernels;
pub mod tokenizer;

pub use ggml_compat;
