//! The fast path: ggml's second table (`type_traits_cpu[]`). For each weight type, the type its
//! activations are quantized to and the dot product of one weight row with one activation row.
//!
//! `scalar.rs` is the specification every SIMD kernel is tested against; `matmul.rs` multiplies
//! a weight matrix by a batch of activations with these kernels.

pub mod matmul;
pub mod scalar;

pub use matmul::{
    matmul, matmul_with, quantize_activations, MatmulError, MatmulScratch, Parallel, ScopedThreads,
    WeightMatrix,
};

use ggml_compat::GgmlType;

/// Dot product of `n` weights (`w`, whole blocks of the weight type) with `n` activations
/// (`a`, whole blocks of the weight type's `vec_dot_type`).
pub type VecDot = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// The kernels of one weight type.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// What activations are quantized to before the dot product (ggml's `vec_dot_type`).
    pub vec_dot_type: GgmlType,
    pub vec_dot: VecDot,
}

/// The kernels for weights of type `ty`, or `None` if kiln cannot multiply with it.
pub fn kernels(ty: GgmlType) -> Option<&'static TypeKernels> {
    scalar::kernels(ty)
}

/// Every weight type [`kernels`] answers for.
pub fn supported_types() -> impl Iterator<Item = GgmlType> {
    scalar::supported_types()
}
