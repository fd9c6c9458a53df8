//! AVX-512 VNNI tile for Q5_0 weights × Q8_0 activations: 4 rows × 8 tokens, bit-identical to
//! ggml's AVX2 `ggml_vec_dot_q5_0_q8_0` — which is also llamafile's `tinyBLAS_Q0_AVX` order.
//!
//! Per output, one 8-lane f32 accumulator; per block, lane `j` gets
//! `fma(d_w · d_a, Σ_{i<4} w[4j+i] · a[4j+i], acc[j])` (the sum exact in i32), then
//! `hsum_float_8`. A 512-bit accumulator holds two tokens' 8 lanes side by side, so one
//! `vpdpbusd`, one conversion, one multiply and one fused multiply-add advance two outputs by
//! a block. `vpdpbusd` wants an unsigned left operand: the weights are used as their unsigned
//! 5-bit codes `u = w + 16` and every lane starts at `−16 · Σ a` (one `vpdpbusd` per token pair
//! and block, shared by the four rows), so the lane holds the same exact `Σ w · a`.
//!
//! The scheme of the generic tile in `x86_avx512_legacy.rs`, written for Q5_0 alone (as
//! `x86_avx512_q8_0.rs` is for Q8_0): no per-kind branches, one bounds check per call instead
//! of several per block, the activation scales of the 8 tokens converted with one `vcvtph2ps`,
//! and the codes unpacked straight into 512 bits: the 16 nibble bytes broadcast to the four
//! 128-bit lanes, a masked `vpsrlw` moves the high nibbles down in lanes 1 and 3, one `vpand`,
//! and the fifth bits are a masked `vpaddb` of 16 (the `qh` word is the byte mask, twice).

use super::GemmKernel;
use crate::kernels::x86_avx2::hsum_float_8;
use core::arch::x86_64::*;

/// Bytes of a Q5_0 block: `d` (f16), `qh` (32 fifth bits), 16 bytes of nibbles.
const WB: usize = 22;
/// Bytes of a Q8_0 block: `d` (f16), 32 × `i8`.
const AB: usize = 34;
/// Rows per tile.
const R: usize = 4;
/// Token pairs per tile (`2P` tokens).
const P: usize = 4;

/// One tile: see [`GemmKernel`] for the arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    let nb = n / 32;
    if nb == 0 {
        out[..R * 2 * P].fill(0.0);
        return;
    }
    // Every read below lies in these bounds: row r < R, token t < 2P, block b < nb.
    assert!(w.len() >= (R - 1) * ws + nb * WB);
    assert!(a.len() >= (2 * P - 1) * as_ + nb * AB);
    assert!(out.len() >= R * 2 * P);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let zero = _mm512_setzero_si512();
    let sixteen = _mm512_set1_epi8(16);
    let low4 = _mm512_set1_epi8(0xF);
    // 16-bit elements 8..16 and 24..32: the 128-bit lanes 1 and 3 (the high nibbles).
    let high_lanes: __mmask32 = 0xFF00_FF00;
    // Lane picks: token 2p in the low 8 lanes, token 2p + 1 in the high 8.
    let pick: [__m512i; P] = std::array::from_fn(|p| {
        let (lo, hi) = (2 * p as i32, 2 * p as i32 + 1);
        _mm512_set_epi32(
            hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
        )
    });
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for b in 0..nb {
        let (wo, ao) = (b * WB, b * AB);
        let mut d_bits = [0u16; 8];
        let mut qy = [zero; P];
        let mut start = [zero; P];
        for p in 0..P {
            let (t0, t1) = (2 * p * as_ + ao, (2 * p + 1) * as_ + ao);
            // SAFETY: t + 34 ≤ (2P − 1) · as_ + nb · 34 ≤ a.len() (asserted above); the loads
            // are unaligned.
            unsafe {
                d_bits[2 * p] = ap.add(t0).cast::<u16>().read_unaligned();
                d_bits[2 * p + 1] = ap.add(t1).cast::<u16>().read_unaligned();
                let lo = _mm256_loadu_si256(ap.add(t0 + 2).cast());
                let hi = _mm256_loadu_si256(ap.add(t1 + 2).cast());
                qy[p] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            }
            start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, sixteen, qy[p]));
        }
        // SAFETY: `d_bits` is 16 readable bytes; the load is unaligned.
        let d_tok = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d_bits.as_ptr().cast()) });
        let d_tok = _mm512_castps256_ps512(d_tok);
        let d_pair: [__m512; P] = std::array::from_fn(|p| _mm512_permutexvar_ps(pick[p], d_tok));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = r * ws + wo;
            // SAFETY: x + 22 ≤ (R − 1) · ws + nb · 22 ≤ w.len() (asserted above); the loads
            // are unaligned.
            let (d_w, qh, qs) = unsafe {
                (
                    wp.add(x).cast::<u16>().read_unaligned(),
                    wp.add(x + 2).cast::<u32>().read_unaligned(),
                    _mm512_broadcast_i32x4(_mm_loadu_si128(wp.add(x + 6).cast())),
                )
            };
            let nib = _mm512_and_si512(_mm512_mask_srli_epi16::<4>(qs, high_lanes, qs), low4);
            let fifth = u64::from(qh) | (u64::from(qh) << 32);
            let u = _mm512_mask_add_epi8(nib, fifth, nib, sixteen);
            let d_w = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(d_w))));
            for p in 0..P {
                let dot = _mm512_dpbusd_epi32(start[p], u, qy[p]);
                let d = _mm512_mul_ps(d_w, d_pair[p]);
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[p]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (p, acc) in acc.iter().enumerate() {
            let lo = _mm512_castps512_ps256(*acc);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
            out[2 * p * R + r] = hsum_float_8(lo);
            out[(2 * p + 1) * R + r] = hsum_float_8(hi);
        }
    }
}

fn tile_q5_0(n: usize, w: &[u8], ws: usize, a: &[u8], as_: usize, out: &mut [f32]) {
    // SAFETY: reachable only through `kernel()`, whose caller guarantees the CPU has
    // avx512f/bw/vl/vnni, avx2, fma and f16c.
    unsafe { tile(n, w, ws, a, as_, out) }
}

/// The Q5_0 tile (ggml's `ggml_vec_dot_q5_0_q8_0` order, for 4 rows × 8 tokens at once).
///
/// # Safety
/// The returned function executes AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C instructions: call
/// only on a CPU that has them.
pub(super) unsafe fn kernel() -> GemmKernel {
    GemmKernel {
        rows: R,
        tokens: 2 * P,
        run: tile_q5_0,
    }
}
