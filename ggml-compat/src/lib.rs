//! Everything in kiln that must be byte-compatible with ggml, and nothing else: the type
//! system, block layouts, reference quantization, and the GGUF container.

pub mod blocks;
pub mod gguf;
pub mod quant;
pub mod types;

pub use types::{GgmlType, QK_K};
