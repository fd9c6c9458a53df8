//! Calibration: quantizers that look at the layer's inputs to choose better quantized weights —
//! GPTQ (error feedback through the inverse Hessian), AWQ (activation-aware scales folded into
//! the previous op, and clipping) — and still write ordinary ggml blocks. `run` is the driver
//! that runs the model layer by layer over calibration text; the importance matrix format
//! lives in `convert::imatrix`. [`quantize_row_weighted`] is the one importance-weighted
//! quantizer every method uses: ggml's, except for the four formats whose ggml quantizer ignores
//! the weights (TQ1_0, TQ2_0, Q1_0, Q2_0), which get kiln's own fit (`lowbit`).

pub mod awq;
mod codec;
mod gemm;
pub mod gptq;
pub mod hessian;
mod lowbit;
pub mod run;

pub use lowbit::{has_weighted_fit, quantize_row_weighted};
