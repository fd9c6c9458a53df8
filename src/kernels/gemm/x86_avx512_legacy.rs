//! AVX-512 VNNI tiles for the 32-element types against Q8_0 / Q8_1 (Q4_0, Q4_1, Q5_0, Q5_1;
//! Q8_0 has its own, `x86_avx512_q8_0.rs`): `R` rows × `2P` tokens per call, bit-identical to
//! the vec_dots of `x86_avx512.rs` and `x86_avx2/legacy.rs` (ggml's AVX2 loops).
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
use crate::kernels::x86_avx2::hsum_float_8;
use crate::kernels::x86_avx2::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, QK};
use core::arch::x86_64::*;
use ggml_compat::GgmlType;

/// Which weight type a tile is instantiated for (a const generic: `match`es fold away).
mod kind {
    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q5_0: u8 = 2;
    pub const Q5_1: u8 = 3;
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
        _ => Q5_1,
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
        _ => 0,
    }
}

/// The 32 unsigned codes of the weight block of kind `K` at `x`, in element order, twice (one
/// copy per 256-bit half). The nibbles are unpacked straight into 512 bits: the 16 bytes
/// broadcast to the four 128-bit lanes, a masked `vpsrlw` moves the high nibbles down in lanes
/// 1 and 3, one `vpand`; a fifth bit is a masked `vpaddb` of 16 (the `qh` word is the byte mask,
/// twice).
///
/// # Safety
/// `x` must point to a readable weight block of kind `K`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn codes<const K: u8>(x: *const u8, c: &Consts) -> __m512i {
    // SAFETY (every read below): inside the block at `x`, per this function's contract; the
    // loads are unaligned.
    let nibbles = |qs: *const u8| {
        let qs = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(qs.cast()) });
        // 16-bit elements 8..16 and 24..32: the 128-bit lanes 1 and 3 (the high nibbles).
        let high_lanes: __mmask32 = 0xFF00_FF00;
        _mm512_and_si512(_mm512_mask_srli_epi16::<4>(qs, high_lanes, qs), c.low4)
    };
    let fifth = |nib: __m512i, qh: *const u8| {
        let qh = u64::from(unsafe { qh.cast::<u32>().read_unaligned() });
        _mm512_mask_add_epi8(nib, qh | (qh << 32), nib, c.sixteen)
    };
    // SAFETY: as above.
    unsafe {
        match K {
            kind::Q4_0 => nibbles(x.add(2)),
            kind::Q4_1 => nibbles(x.add(4)),
            kind::Q5_0 => fifth(nibbles(x.add(6)), x.add(2)),
            _ => fifth(nibbles(x.add(8)), x.add(4)),
        }
    }
}

/// Constants of [`codes`], made once per tile so that they stay in registers.
struct Consts {
    low4: __m512i,
    sixteen: __m512i,
}

/// The f16 at `p` as f32, in the low lane.
///
/// # Safety
/// `p` must point to 2 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> __m128 {
    // SAFETY: per this function's contract; unaligned read.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))
}

/// Eight little-endian f16s (`bits`) as f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16x8(bits: [u16; 8]) -> __m256 {
    // SAFETY: `bits` is 16 readable bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bits.as_ptr().cast()) })
}

/// One tile of kind `K`: see [`GemmKernel`] for the arguments. One bounds check per call; the
/// blocks are then read through raw pointers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const K: u8>(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let (wb, ab) = (w_block(K), if has_min(K) { Q8_1 } else { Q8_0 });
    // Offset of the quants in an activation block (Q8_0: d; Q8_1: d, s).
    let aq = ab - QK;
    let nb = n / QK;
    if nb == 0 {
        out[..R * 2 * P].fill(0.0);
        return;
    }
    // Every read below lies in these bounds: row r < R, token t < 2P, block b < nb.
    assert!(w.len() >= (R - 1) * ws + nb * wb);
    assert!(a.len() >= (2 * P - 1) * as_ + nb * ab);
    assert!(out.len() >= R * 2 * P);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let zero = _mm512_setzero_si512();
    let bias_u8 = _mm512_set1_epi8(bias(K));
    let consts = Consts {
        low4: _mm512_set1_epi8(0xF),
        sixteen: _mm512_set1_epi8(16),
    };
    // Lane picks: token 2p in the low 8 lanes, token 2p + 1 in the high 8.
    let pick: [__m512i; P] = std::array::from_fn(|p| {
        let (lo, hi) = (2 * p as i32, 2 * p as i32 + 1);
        _mm512_set_epi32(
            hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
        )
    });
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut summs = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let wo = b * wb;
        let mut qy = [zero; P];
        let mut start = [zero; P];
        let mut d_bits = [0u16; 8];
        let mut s_bits = [0u16; 8];
        let ao = b * ab;
        for p in 0..P {
            let (y0, y1) = (2 * p * as_ + ao, (2 * p + 1) * as_ + ao);
            // SAFETY: y + ab ≤ (2P − 1) · as_ + nb · ab ≤ a.len() (asserted above); the loads
            // are unaligned.
            unsafe {
                let lo = _mm512_castsi256_si512(_mm256_loadu_si256(ap.add(y0 + aq).cast()));
                qy[p] = _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(ap.add(y1 + aq).cast()));
                d_bits[2 * p] = ap.add(y0).cast::<u16>().read_unaligned();
                d_bits[2 * p + 1] = ap.add(y1).cast::<u16>().read_unaligned();
                if has_min(K) {
                    s_bits[2 * p] = ap.add(y0 + 2).cast::<u16>().read_unaligned();
                    s_bits[2 * p + 1] = ap.add(y1 + 2).cast::<u16>().read_unaligned();
                }
            }
            if bias(K) != 0 {
                start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias_u8, qy[p]));
            }
        }
        let d_tok = _mm512_castps256_ps512(f16x8(d_bits));
        let d_pair: [__m512; P] = std::array::from_fn(|p| _mm512_permutexvar_ps(pick[p], d_tok));
        let s_tok = f16x8(s_bits);
        for (r, (acc, summs)) in acc.iter_mut().zip(&mut summs).enumerate() {
            // SAFETY: x + wb ≤ (R − 1) · ws + nb · wb ≤ w.len() (asserted above).
            let x = unsafe { wp.add(r * ws + wo) };
            // SAFETY: as just above.
            let (u, d_w) = unsafe { (codes::<K>(x, &consts), _mm512_broadcastss_ps(f16_at(x))) };
            for p in 0..P {
                let dot = _mm512_dpbusd_epi32(start[p], u, qy[p]);
                let d = _mm512_mul_ps(d_w, d_pair[p]);
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[p]);
            }
            if has_min(K) {
                // SAFETY: as just above (the min follows `d`).
                let m = _mm256_broadcastss_ps(unsafe { f16_at(x.add(2)) });
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
        _ => return None,
    };
    Some(GemmKernel {
        rows: R,
        tokens: 2 * P,
        run,
    })
}
