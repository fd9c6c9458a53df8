//! AVX-512 kernels (placeholder until measured).

use super::VecDot;
use ggml_compat::GgmlType;

/// The AVX-512 kernels, by weight type.
///
/// # Safety
/// The functions execute AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call only after
/// checking the CPU has them.
pub(super) unsafe fn kernels() -> &'static [(GgmlType, VecDot)] {
    &[]
}
