//! Calibration: methods that use activations from running the model to choose better quantized
//! weights (AWQ scales and clipping), then hand them to ggml's ordinary quantizer.

pub mod awq;
mod gemm;
