//! AVX-512 VNNI tiles for the 32-element types against Q8_0 / Q8_1 (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0): `R` rows × `2P` tokens per call, bit-identical to the vec_dots of `x86_avx512.rs` and
//! `x86_avx2/legacy.rs` (ggml's AVX2 loops).
//!
//! Those vec_dots keep one 8-lane f32 accumulator; per block, lane `j` gets
//! `acc[j] = fma(d_w · d_a, Σ_{i<4} x[4j+i] · y[4j+i], acc[j])` (the `Σ` exact in i32), and the
//! result is ggml's `hsum_float_8` of it (plus, for Q4_1 / Q5_1, the f32 sum of `m · s` over the
//! blocks, added last). Here a 512-bit accumulator holds two tokens' 8 lanes side by side, so one
//! `vpdpbusd`, one conversion, one multiply and one fused multiply-add advance two (row, token)
//! pairs by a block. `vpdpbusd` wants an unsigned left operand, so weights are unpacked to their
//! unsigned code `u = x + bias` and every lane starts at `−bias · Σ y` (one `vpdpbusd` per token
//! and block, shared by all rows): `Σ u · y − bias · Σ y` is the same exact integer.

use super::GemmKernel;
use crate::kernels::x86_avx2::{fp16, hsum_float_8, load128, load256};
use crate::kernels::x86_avx2::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, QK};
use core::arch::x86_64::*;
use ggml_compat::GgmlType;

/// Which weight type a tile is instantiated for (a const generic: `match`es fold away).
mod kind {
    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q5_0: u8 = 2;
    pub const Q5_1: u8 = 3;
    pub const Q8_0: u8 = 4;
}

/// Rows per tile (4 × 4 pairs measured no worse than 4 × 3, 3 × 4 or 2 × 4 here).
const R: usize = 4;
/// Token pairs per tile (`2P` tokens).
const P: usize = 4;

/// Bytes of one weight block of kind `K`.
const fn w_block(k: u8) -> usize {
    match k {
        kind::Q4_0 => Q4_0,
        kind::Q4_1 => Q4_1,
        kind::Q5_0 => Q5_0,
        kind::Q5_1 => Q5_1,
        _ => Q8_0,
    }
}

/// Whether kind `K` has a min (`m`, against Q8_1 activations, whose `s` it multiplies).
const fn has_min(k: u8) -> bool {
    matches!(k, kind::Q4_1 | kind::Q5_1)
}

/// `u − x` for kind `K`: what the unsigned code exceeds the signed quant by.
const fn bias(k: u8) -> i8 {
    match k {
        kind::Q4_0 => 8,
        kind::Q5_0 => 16,
        kind::Q8_0 => -128, // 0x80: the byte 128 as vpdpbusd's unsigned operand
        _ => 0,
    }
}

/// The 32 unsigned codes of weight block `x` of kind `K`, in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn codes<const K: u8>(x: &[u8]) -> __m256i {
    let nibbles = |qs: &[u8]| {
        let t = load128(qs);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
        _mm256_and_si256(both, _mm256_set1_epi8(0xF))
    };
    let fifth = |qh: &[u8]| {
        let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10))
    };
    match K {
        kind::Q4_0 => nibbles(&x[2..]),
        kind::Q4_1 => nibbles(&x[4..]),
        kind::Q5_0 => _mm256_or_si256(nibbles(&x[6..]), fifth(&x[2..])),
        kind::Q5_1 => _mm256_or_si256(nibbles(&x[8..]), fifth(&x[4..])),
        _ => _mm256_xor_si256(load256(&x[2..]), _mm256_set1_epi8(0x80u8 as i8)),
    }
}

/// Eight little-endian f16s (`bits`) as f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16x8(bits: [u16; 8]) -> __m256 {
    // SAFETY: `bits` is 16 readable bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bits.as_ptr().cast()) })
}

/// One tile of kind `K`: see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const K: u8>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let (wb, ab) = if has_min(K) {
        (w_block(K), Q8_1)
    } else {
        (w_block(K), Q8_0)
    };
    // Offset of the quants in an activation block (Q8_0: d; Q8_1: d, s).
    let aq = ab - QK;
    let zero = _mm512_setzero_si512();
    let bias_u8 = _mm512_set1_epi8(bias(K));
    // Lane picks: token 2p in the low 8 lanes, token 2p + 1 in the high 8.
    let pick: [__m512i; P] = std::array::from_fn(|p| {
        let (lo, hi) = (2 * p as i32, 2 * p as i32 + 1);
        _mm512_set_epi32(
            hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
        )
    });
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut summs = [_mm256_setzero_ps(); R];
    for b in 0..n / QK {
        let y = |t: usize| &a[t * as_ + b * ab..][..ab];
        let mut qy = [zero; P];
        let mut start = [zero; P];
        let mut d_bits = [0u16; 8];
        let mut s_bits = [0u16; 8];
        for p in 0..P {
            let (y0, y1) = (y(2 * p), y(2 * p + 1));
            let lo = _mm512_castsi256_si512(load256(&y0[aq..]));
            qy[p] = _mm512_inserti64x4::<1>(lo, load256(&y1[aq..]));
            if bias(K) != 0 {
                start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias_u8, qy[p]));
            }
            for (i, yt) in [(2 * p, y0), (2 * p + 1, y1)] {
                d_bits[i] = u16::from_le_bytes([yt[0], yt[1]]);
                s_bits[i] = u16::from_le_bytes([yt[2], yt[3]]);
            }
        }
        let d_tok = _mm512_castps256_ps512(f16x8(d_bits));
        let d_pair: [__m512; P] = std::array::from_fn(|p| _mm512_permutexvar_ps(pick[p], d_tok));
        let s_tok = f16x8(s_bits);
        for (r, (acc, summs)) in acc.iter_mut().zip(&mut summs).enumerate() {
            let x = &w[r * ws + b * wb..][..wb];
            let u = _mm512_broadcast_i64x4(codes::<K>(x));
            let d_w = _mm512_set1_ps(fp16(x));
            for p in 0..P {
                let dot = _mm512_dpbusd_epi32(start[p], u, qy[p]);
                let d = _mm512_mul_ps(d_w, d_pair[p]);
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[p]);
            }
            if has_min(K) {
                let m = _mm256_set1_ps(fp16(&x[2..]));
                *summs = _mm256_add_ps(*summs, _mm256_mul_ps(m, s_tok));
            }
        }
    }
    for (r, (acc, summs)) in acc.iter().zip(&summs).enumerate() {
        let mut s = [0f32; 8];
        // SAFETY: `s` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), *summs) };
        for (p, acc) in acc.iter().enumerate() {
            let lo = _mm512_castps512_ps256(*acc);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
            for (t, half) in [(2 * p, lo), (2 * p + 1, hi)] {
                let v = hsum_float_8(half);
                // No `+ 0.0` for the types without a min: it would turn a −0 into +0.
                out[t * R + r] = if has_min(K) { v + s[t] } else { v };
            }
        }
    }
}

/// Declares a safe wrapper per instantiation.
macro_rules! wrappers {
    ($($name:ident => $k:expr),* $(,)?) => {
        $(
            fn $name(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
                // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
                // avx512f/bw/vl/vnni, avx2, fma and f16c.
                unsafe { tile::<{ $k }>(n, w, ws, a, as_, out) }
            }
        )*
    };
}

wrappers!(
    tile_q4_0 => kind::Q4_0,
    tile_q4_1 => kind::Q4_1,
    tile_q5_0 => kind::Q5_0,
    tile_q5_1 => kind::Q5_1,
    tile_q8_0 => kind::Q8_0,
);

/// The tile of weight type `ty`, if this file has one.
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel(ty: GgmlType) -> Option<GemmKernel> {
    let run = match ty {
        GgmlType::Q4_0 => tile_q4_0,
        GgmlType::Q4_1 => tile_q4_1,
        GgmlType::Q5_0 => tile_q5_0,
        GgmlType::Q5_1 => tile_q5_1,
        GgmlType::Q8_0 => tile_q8_0,
        _ => return None,
    };
    Some(GemmKernel {
        rows: R,
        tokens: 2 * P,
        run,
    })
}
