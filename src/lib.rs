//! kiln: GGUF-compatible LLM inference for laptop CPUs.

pub mod chat;
pub mod kernels;
pub mod sample;

pub use ggml_compat;
