//! The GGUF container: a bounded reader over a memory map and a streaming writer.
