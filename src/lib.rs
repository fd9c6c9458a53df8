//! kiln: GGUF-compatible LLM inference for laptop CPUs.

pub mod kernels;

pub use ggml_compat;
