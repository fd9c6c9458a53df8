//! Block layouts, the twin of ggml's `ggml-common.h`. Every struct is `#[repr(C)]`, free of
//! padding (so `bytemuck` can view file bytes as blocks), and its size is asserted at compile time
//! against the type table in `types.rs`.

use crate::types::{GgmlType, QK_K};
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Packed 6-bit scales and mins of Q4_K / Q5_K (and Q3_K's 6-bit scales).
pub const K_SCALE_SIZE: usize = 12;

macro_rules! block {
    ($(#[$doc:meta])* $name:ident for $ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Pod, Zeroable)]
        pub struct $name { $(pub $field: $fty),* }
        const _: () = assert!(std::mem::size_of::<$name>() == GgmlType::$ty.type_size());
    };
}

block!(
    /// 32 weights: `x = d * (q - 8)`, 4-bit q, low nibbles hold elements 0..16.
    BlockQ4_0 for Q4_0 { d: f16, qs: [u8; 16] }
);
block!(
    /// 32 weights: `x = d * q + m`.
    BlockQ4_1 for Q4_1 { d: f16, m: f16, qs: [u8; 16] }
);
block!(
    /// 32 weights: `x = d * (q - 16)`, 5th bits in `qh`.
    BlockQ5_0 for Q5_0 { d: f16, qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// 32 weights: `x = d * q + m`, 5th bits in `qh`.
    BlockQ5_1 for Q5_1 { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// 32 weights: `x = d * q`.
    BlockQ8_0 for Q8_0 { d: f16, qs: [i8; 32] }
);
block!(
    /// 32 activations: `x = d * q`, `s = d * sum(q)`.
    BlockQ8_1 for Q8_1 { d: f16, s: f16, qs: [i8; 32] }
);
block!(
    /// 256 weights in 16 groups of 16: 4-bit scale and min per group, 2-bit q.
    BlockQ2K for Q2_K { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: f16, dmin: f16 }
);
block!(
    /// 256 weights in 16 groups of 16: 6-bit scales, 3-bit q (high bit in `hmask`).
    BlockQ3K for Q3_K { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; 12], d: f16 }
);
block!(
    /// 256 weights in 8 groups of 32: 6-bit scales and mins, 4-bit q.
    BlockQ4K for Q4_K { d: f16, dmin: f16, scales: [u8; K_SCALE_SIZE], qs: [u8; QK_K / 2] }
);
block!(
    /// 256 weights in 8 groups of 32: 6-bit scales and mins, 5-bit q.
    BlockQ5K for Q5_K {
        d: f16,
        dmin: f16,
        scales: [u8; K_SCALE_SIZE],
        qh: [u8; QK_K / 8],
        qs: [u8; QK_K / 2],
    }
);
block!(
    /// 256 weights in 16 groups of 16: 8-bit scales, 6-bit q.
    BlockQ6K for Q6_K { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: f16 }
);
block!(
    /// 256 activations: f32 scale, 8-bit q, sums of each group of 16.
    BlockQ8K for Q8_K { d: f32, qs: [i8; QK_K], bsums: [i16; QK_K / 16] }
);
block!(
    /// 32 weights: 4-bit indices into the non-linear `kvalues_iq4nl` table.
    BlockIQ4NL for IQ4_NL { d: f16, qs: [u8; 16] }
);
block!(
    /// 256 weights in 8 groups of 32: 6-bit scales (split low/high), IQ4_NL indices.
    BlockIQ4XS for IQ4_XS { d: f16, scales_h: u16, scales_l: [u8; QK_K / 64], qs: [u8; QK_K / 2] }
);
block!(
    /// 256 ternary weights: 5 trits per byte in `qs`, 4 per byte in `qh`.
    BlockTQ1_0 for TQ1_0 { qs: [u8; (QK_K - 4 * QK_K / 64) / 5], qh: [u8; QK_K / 64], d: f16 }
);
block!(
    /// 256 ternary weights, 2 bits each.
    BlockTQ2_0 for TQ2_0 { qs: [u8; QK_K / 4], d: f16 }
);
block!(
    /// 32 weights: E8M0 shared exponent, 4-bit E2M1 values.
    BlockMXFP4 for MXFP4 { e: u8, qs: [u8; 16] }
);
block!(
    /// 64 weights: four UE4M3 scales (one per 16), 4-bit E2M1 values.
    BlockNVFP4 for NVFP4 { d: [u8; 4], qs: [u8; 32] }
);
block!(
    /// 128 weights of one bit: `x = bit ? d : -d`.
    BlockQ1_0 for Q1_0 { d: f16, qs: [u8; 16] }
);
block!(
    /// 64 weights of two bits: `x = d * (q - 1)`.
    BlockQ2_0 for Q2_0 { d: f16, qs: [u8; 16] }
);

/// Views `bytes` as a slice of blocks `B`, or `None` if the length is not a whole number of
/// blocks or the bytes are not aligned for `B` (file data is aligned in every file ggml writes).
pub fn as_blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// Mutable twin of [`as_blocks`].
pub fn as_blocks_mut<B: Pod>(bytes: &mut [u8]) -> Option<&mut [B]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}
