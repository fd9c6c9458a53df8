//! Calibration: quantizers that look at the layer's inputs to choose better quantized weights —
//! GPTQ (error feedback through the inverse Hessian), AWQ (activation-aware scales folded into
//! the previous op, and clipping) — and still write ordinary ggml blocks. `run` is the driver
//! that runs the model layer by layer over calibration text; the importance matrix format
//! lives in `convert::imatrix`.

pub mod awq;
mod codec;
mod gemm;
pub mod gptq;
pub mod hessian;
pub mod run;
