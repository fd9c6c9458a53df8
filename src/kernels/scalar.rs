//! Scalar kernels: the reference every SIMD kernel is tested against. Each `vec_dot_*` matches
//! ggml's `ggml_vec_dot_*_generic` in `ggml-cpu/quants.c` (same integer sums, same float order).

use super::TypeKernels;
use ggml_compat::GgmlType;

/// The scalar kernels of `ty`.
pub fn kernels(_ty: GgmlType) -> Option<&'static TypeKernels> {
    None
}
