//! aarch64 NEON kernels: ports of the `__ARM_NEON` branches of ggml's
//! `ggml-cpu/arch/arm/quants.c` (and of `ggml_vec_dot_f32`/`_f16` in `ggml-cpu/vec.cpp`).
//!
//! Every kernel is written once, generic over [`Dot`], and compiled twice: for [`Isa::Neon`]
//! (plain ARMv8 NEON: `smull` + `sadalp`, ggml's `ggml_vdotq_s32` fallback) and for
//! [`Isa::NeonDot`] (the `dotprod` extension's `sdot`, ggml's `__ARM_FEATURE_DOTPROD`). Both
//! compute the same exact integer sums per block as the scalar twins in `scalar.rs`; the float
//! sums keep ggml's NEON order, so results differ from the scalar kernels only by rounding.
//!
//! Blocks are read straight from the byte rows (unaligned loads), whole blocks only, up to `n`
//! elements, like the scalar kernels.
//!
//! [`Isa::Neon`]: super::Isa::Neon
//! [`Isa::NeonDot`]: super::Isa::NeonDot

use super::VecDot;
use core::arch::aarch64::*;
use core::arch::asm;
use ggml_compat::{GgmlType, QK_K};

mod floats;
mod k_quants;
mod legacy;
mod low_bits;

const QK: usize = 32;

/// Byte sizes of the blocks read here, from ggml-compat's `#[repr(C)]` twins of ggml-common.h.
mod sizes {
    use ggml_compat::blocks::*;
    use std::mem::size_of;
    pub(super) const Q4_0: usize = size_of::<BlockQ4_0>();
    pub(super) const Q4_1: usize = size_of::<BlockQ4_1>();
    pub(super) const Q5_0: usize = size_of::<BlockQ5_0>();
    pub(super) const Q5_1: usize = size_of::<BlockQ5_1>();
    pub(super) const Q8_0: usize = size_of::<BlockQ8_0>();
    pub(super) const Q8_1: usize = size_of::<BlockQ8_1>();
    pub(super) const IQ4NL: usize = size_of::<BlockIQ4NL>();
    pub(super) const MXFP4: usize = size_of::<BlockMXFP4>();
    pub(super) const IQ4XS: usize = size_of::<BlockIQ4XS>();
    pub(super) const TQ1_0: usize = size_of::<BlockTQ1_0>();
    pub(super) const TQ2_0: usize = size_of::<BlockTQ2_0>();
    pub(super) const Q1_0: usize = size_of::<BlockQ1_0>();
    pub(super) const Q2_0: usize = size_of::<BlockQ2_0>();
    pub(super) const Q2K: usize = size_of::<BlockQ2K>();
    pub(super) const Q3K: usize = size_of::<BlockQ3K>();
    pub(super) const Q4K: usize = size_of::<BlockQ4K>();
    pub(super) const Q5K: usize = size_of::<BlockQ5K>();
    pub(super) const Q6K: usize = size_of::<BlockQ6K>();
    pub(super) const Q8K: usize = size_of::<BlockQ8K>();
    /// Offsets inside a Q8_K block (`d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]`).
    pub(super) const Q8K_QS: usize = std::mem::offset_of!(BlockQ8K, qs);
    pub(super) const Q8K_BSUMS: usize = std::mem::offset_of!(BlockQ8K, bsums);
}
use sizes::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The one difference between the two NEON builds: how four adjacent i8 products are summed
/// into each i32 lane (ggml's `ggml_vdotq_s32`).
trait Dot {
    /// `acc[i] + sum_{k<4} a[4i+k] * b[4i+k]` — or, in the fallback, the same 16 products
    /// summed in other groups of four; only the total over the lanes is the same, which is all
    /// any kernel here uses.
    fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `sdot` (ARMv8.2 `dotprod`). Only called from kernels compiled with that feature.
struct Sdot;

impl Dot for Sdot {
    #[inline(always)]
    fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: `sdot` only reads and writes these registers. It is reached only through the
        // `NeonDot` wrappers, which are compiled with `dotprod` and handed out only to CPUs
        // that have it (see `kernels`). Stable Rust has no `vdotq_s32` yet, hence the asm.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

/// Plain NEON: widening multiplies, pairwise add-accumulate (ggml's fallback, as in candle's
/// `neon.rs`).
struct Mull;

impl Dot for Mull {
    #[inline(always)]
    fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON only; reached only through the kernels of both tables, which are
        // compiled with `neon` and handed out only to CPUs that have it (see `kernels`).
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

/// 16 bytes starting at `b[0]`. Panics if `b` is shorter (callers pass constant ranges of
/// fixed-size blocks, so the check folds away).
#[inline]
#[target_feature(enable = "neon")]
fn load_u8(b: &[u8]) -> uint8x16_t {
    let b: &[u8; 16] = b[..16].try_into().unwrap();
    // SAFETY: `b` is 16 readable bytes; `ld1` has no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// 16 bytes starting at `b[0]`, as i8s.
#[inline]
#[target_feature(enable = "neon")]
fn load_s8(b: &[u8]) -> int8x16_t {
    vreinterpretq_s8_u8(load_u8(b))
}

/// Eight little-endian i16s starting at `b[0]`.
#[inline]
#[target_feature(enable = "neon")]
fn load_s16(b: &[u8]) -> int16x8_t {
    vreinterpretq_s16_u8(load_u8(b))
}

/// Four little-endian f32s starting at `b[0]`.
#[inline]
#[target_feature(enable = "neon")]
fn load_f32(b: &[u8]) -> float32x4_t {
    vreinterpretq_f32_u8(load_u8(b))
}

/// The little-endian f16 at `b[0..2]` as f32 (exact).
#[inline(always)]
fn fp16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The little-endian f32 at `b[0..4]`.
#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Eight little-endian f16s at `b[0..16]` as two vectors of four f32s (`fcvtl`/`fcvtl2`,
/// base ARMv8 NEON: exact, no `fp16` extension needed).
#[inline]
#[target_feature(enable = "neon")]
fn f16x8_to_f32(b: &[u8]) -> (float32x4_t, float32x4_t) {
    let h = load_u8(b);
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: register-only conversions, available on every aarch64 CPU. Stable Rust has no
    // f16 vector type for `vcvt_f32_f16`, hence the asm.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}

/// Whole blocks of both rows, at most `n / block_len` of them.
#[inline(always)]
fn blocks<'a, const W: usize, const A: usize>(
    n: usize,
    block_len: usize,
    w: &'a [u8],
    a: &'a [u8],
) -> impl Iterator<Item = (&'a [u8; W], &'a [u8; A])> {
    let (x, _) = w.as_chunks::<W>();
    let (y, _) = a.as_chunks::<A>();
    x.iter().zip(y).take(n / block_len)
}

/// The bits of `qh[0..4]` (little-endian u32) as 32 bytes, 0xFF where set: element `j`'s byte
/// is lane `j % 16` of vector `j / 16` (ggml's `table_b2b_*` lookups, done with a shuffle).
#[inline]
#[target_feature(enable = "neon")]
fn bytes_from_bits_32(qh: &[u8]) -> (uint8x16_t, uint8x16_t) {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
    let bit_of_lane = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    const IDX_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const IDX_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    let lo = vqtbl1q_u8(v, load_u8(&IDX_LO));
    let hi = vqtbl1q_u8(v, load_u8(&IDX_HI));
    (vtstq_u8(lo, bit_of_lane), vtstq_u8(hi, bit_of_lane))
}

// ---------------------------------------------------------------------------------------------
// The tables.

/// Declares, per kernel, a safe wrapper per build (plain NEON / dotprod) and the two lists
/// [`kernels`] and [`kernels_dotprod`] return.
macro_rules! kernel_list {
    ($($ty:ident => $module:ident :: $kernel:ident),* $(,)?) => {
        mod neon {
            $(
                #[target_feature(enable = "neon")]
                fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                    super::$module::$kernel::<super::Mull>(n, w, a)
                }
            )*
            pub(super) mod wrappers {
                $(
                    pub(in super::super) fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                        // SAFETY: every aarch64 CPU has NEON (`kernels` checks it anyway).
                        unsafe { super::$kernel(n, w, a) }
                    }
                )*
            }
        }
        mod dotprod {
            $(
                #[target_feature(enable = "neon,dotprod")]
                fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                    super::$module::$kernel::<super::Sdot>(n, w, a)
                }
            )*
            pub(super) mod wrappers {
                $(
                    pub(in super::super) fn $kernel(n: usize, w: &[u8], a: &[u8]) -> f32 {
                        // SAFETY: reachable only through `kernels_dotprod()`, whose caller
                        // guarantees the CPU has neon and dotprod.
                        unsafe { super::$kernel(n, w, a) }
                    }
                )*
            }
        }
        const KERNELS: &[(GgmlType, VecDot)] =
            &[$((GgmlType::$ty, neon::wrappers::$kernel as VecDot)),*];
        const KERNELS_DOTPROD: &[(GgmlType, VecDot)] =
            &[$((GgmlType::$ty, dotprod::wrappers::$kernel as VecDot)),*];
    };
}

kernel_list!(
    Q8_0 => legacy::vec_dot_q8_0_q8_0,
    Q4_0 => legacy::vec_dot_q4_0_q8_0,
    Q4_1 => legacy::vec_dot_q4_1_q8_1,
    Q5_0 => legacy::vec_dot_q5_0_q8_0,
    Q5_1 => legacy::vec_dot_q5_1_q8_1,
    IQ4_NL => legacy::vec_dot_iq4_nl_q8_0,
    Q4_K => k_quants::vec_dot_q4_k_q8_k,
    Q5_K => k_quants::vec_dot_q5_k_q8_k,
    Q6_K => k_quants::vec_dot_q6_k_q8_k,
    F16 => floats::vec_dot_f16,
    F32 => floats::vec_dot_f32,
    Q2_K => low_bits::vec_dot_q2_k_q8_k,
    Q3_K => low_bits::vec_dot_q3_k_q8_k,
    IQ4_XS => low_bits::vec_dot_iq4_xs_q8_k,
    TQ2_0 => low_bits::vec_dot_tq2_0_q8_k,
    TQ1_0 => low_bits::vec_dot_tq1_0_q8_k,
    Q1_0 => low_bits::vec_dot_q1_0_q8_0,
    Q2_0 => low_bits::vec_dot_q2_0_q8_0,
    MXFP4 => legacy::vec_dot_mxfp4_q8_0,
);

/// The plain-NEON kernels, by weight type (each has the `vec_dot_type` of the scalar table).
///
/// # Safety
/// The functions execute NEON instructions: call only on a CPU that has them
/// (`is_aarch64_feature_detected!("neon")`), as `KernelTable::build` does.
pub(super) unsafe fn kernels() -> &'static [(GgmlType, VecDot)] {
    KERNELS
}

/// The same kernels built with `sdot`.
///
/// # Safety
/// The functions execute NEON and dotprod instructions: call only on a CPU that has both
/// (`is_aarch64_feature_detected!("dotprod")`), as `KernelTable::build` does.
pub(super) unsafe fn kernels_dotprod() -> &'static [(GgmlType, VecDot)] {
    KERNELS_DOTPROD
}
