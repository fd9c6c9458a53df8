//! Calibration: quantizers that look at the layer's inputs (GPTQ here; the importance matrix
//! lives in `convert::imatrix`) and still write ordinary ggml blocks.

mod codec;
pub mod gptq;
pub mod hessian;
