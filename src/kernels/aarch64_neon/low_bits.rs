//! The low-bit types: Q2_K, Q3_K, IQ4_XS, TQ1_0, TQ2_0 against Q8_K, and Q1_0, Q2_0 against
//! Q8_0 (ggml's `__ARM_NEON` branches; exact integer sums per block, then ggml's float steps).

use super::legacy::lookup_nibbles;
use super::*;
use ggml_compat::quant::tables::KVALUES_IQ4NL;

/// The Q8_K activation block's scale, quants and per-16 sums.
#[inline(always)]
fn q8k(y: &[u8; Q8K]) -> (f32, &[u8], &[u8]) {
    (f32_at(y), &y[Q8K_QS..Q8K_QS + QK_K], &y[Q8K_BSUMS..])
}

/// `a · q8[0..16]` as an i32.
#[inline]
#[target_feature(enable = "neon")]
fn dot16<D: Dot>(a: int8x16_t, q8: &[u8]) -> i32 {
    vaddvq_s32(D::dot(vdupq_n_s32(0), a, load_s8(q8)))
}

/// Q2_K · Q8_K (16 groups of 16: `scales` low nibble = scale, high nibble = min; 2-bit q;
/// `x = d * sc * q - dmin * m`). Matches the NEON branch of `ggml_vec_dot_q2_K_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q2_k_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3 = vdupq_n_u8(3);
    let m4 = vdupq_n_u8(0xF);
    let mut sumf = 0f32;
    for (x, y) in blocks::<Q2K, Q8K>(n, QK_K, w, a) {
        let (yd, q8, bsums) = q8k(y);
        let d = yd * fp16(&x[80..]);
        let dmin = -yd * fp16(&x[82..]);
        let mins_and_scales = load_u8(x);
        let mut aux = [0u8; 16];
        // SAFETY: `aux` is 16 writable bytes.
        unsafe { vst1q_u8(aux.as_mut_ptr(), vandq_u8(mins_and_scales, m4)) };
        let mins = vshrq_n_u8::<4>(mins_and_scales);
        let (m0, m1) = (
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins))),
            vreinterpretq_s16_u16(vmovl_high_u8(mins)),
        );
        let (b0, b1) = (load_s16(bsums), load_s16(&bsums[16..]));
        let s0 = vaddq_s32(
            vmull_s16(vget_low_s16(m0), vget_low_s16(b0)),
            vmull_high_s16(m0, b0),
        );
        let s1 = vaddq_s32(
            vmull_s16(vget_low_s16(m1), vget_low_s16(b1)),
            vmull_high_s16(m1, b1),
        );
        sumf += dmin * vaddvq_s32(vaddq_s32(s0, s1)) as f32;
        let mut isum = 0i32;
        for c in 0..QK_K / 128 {
            let q2 = &x[16 + 32 * c..];
            let (b0, b1) = (load_u8(q2), load_u8(&q2[16..]));
            for s in 0..4 {
                let q8 = &q8[128 * c + 32 * s..];
                let shift = vdupq_n_s8(-2 * s as i8);
                let v0 = vandq_u8(vshlq_u8(b0, shift), m3);
                let v1 = vandq_u8(vshlq_u8(b1, shift), m3);
                let is = 8 * c + 2 * s;
                isum += dot16::<D>(vreinterpretq_s8_u8(v0), q8) * aux[is] as i32;
                isum += dot16::<D>(vreinterpretq_s8_u8(v1), &q8[16..]) * aux[is + 1] as i32;
            }
        }
        sumf += d * isum as f32;
    }
    sumf
}

/// The sixteen 6-bit Q3_K scales minus 32, unpacked from 12 bytes as ggml's kmask shuffle does.
#[inline(always)]
fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a0, a1, tmp) = (word(0), word(4), word(8));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    core::array::from_fn(|i| aux[i / 4].to_le_bytes()[i % 4] as i32 - 32)
}

/// Q3_K · Q8_K (16 groups of 16: 6-bit scales biased by 32, 2 low bits in `qs`, the high bit
/// in `hmask` where a clear bit subtracts 4). Matches the NEON branch of
/// `ggml_vec_dot_q3_K_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q3_k_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3b = vdupq_n_u8(3);
    let mut sumf = 0f32;
    for (x, y) in blocks::<Q3K, Q8K>(n, QK_K, w, a) {
        let (yd, q8, _) = q8k(y);
        let d = yd * fp16(&x[108..]);
        let scale = q3_k_scales(&x[96..108]);
        let (qh0, qh1) = (load_u8(x), load_u8(&x[16..]));
        let mut isum = 0i32;
        for c in 0..QK_K / 128 {
            let q3 = &x[32 + 32 * c..];
            let (b0, b1) = (load_u8(q3), load_u8(&q3[16..]));
            for s in 0..4 {
                // Bit 4c + s of hmask clear: subtract 4.
                let bit = vdupq_n_u8(1 << (4 * c + s));
                let h0 = vandq_u8(vceqq_u8(vandq_u8(qh0, bit), vdupq_n_u8(0)), vdupq_n_u8(4));
                let h1 = vandq_u8(vceqq_u8(vandq_u8(qh1, bit), vdupq_n_u8(0)), vdupq_n_u8(4));
                let shift = vdupq_n_s8(-2 * s as i8);
                let v0 = vsubq_s8(
                    vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b0, shift), m3b)),
                    vreinterpretq_s8_u8(h0),
                );
                let v1 = vsubq_s8(
                    vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b1, shift), m3b)),
                    vreinterpretq_s8_u8(h1),
                );
                let q8 = &q8[128 * c + 32 * s..];
                let is = 8 * c + 2 * s;
                isum += dot16::<D>(v0, q8) * scale[is];
                isum += dot16::<D>(v1, &q8[16..]) * scale[is + 1];
            }
        }
        sumf += d * isum as f32;
    }
    sumf
}

/// IQ4_XS · Q8_K (8 groups of 32: 6-bit scales biased by 32, low 4 bits in `scales_l`, high 2
/// in `scales_h`; IQ4_NL levels). Matches the NEON branch of `ggml_vec_dot_iq4_xs_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_iq4_xs_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let values = load_s8(&KVALUES_IQ4NL.map(|v| v as u8));
    let mut sumf = 0f32;
    for (x, y) in blocks::<IQ4XS, Q8K>(n, QK_K, w, a) {
        let (yd, q8, _) = q8k(y);
        let d4d8 = fp16(x) * yd;
        let mut h = u16::from_le_bytes([x[2], x[3]]) as i32;
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for ib in (0..QK_K / 32).step_by(2) {
            let qs = &x[8 + 16 * ib..];
            let q8 = &q8[32 * ib..];
            let (a0, a1) = lookup_nibbles(values, qs);
            let (a2, a3) = lookup_nibbles(values, &qs[16..]);
            let p1 = D::dot(
                D::dot(vdupq_n_s32(0), a0, load_s8(q8)),
                a1,
                load_s8(&q8[16..]),
            );
            let p2 = D::dot(
                D::dot(vdupq_n_s32(0), a2, load_s8(&q8[32..])),
                a3,
                load_s8(&q8[48..]),
            );
            let sl = x[4 + ib / 2] as i32;
            let ls1 = ((sl & 0xF) | ((h << 4) & 0x30)) - 32;
            let ls2 = ((sl >> 4) | ((h << 2) & 0x30)) - 32;
            h >>= 4;
            sumi1 += vaddvq_s32(p1) * ls1;
            sumi2 += vaddvq_s32(p2) * ls2;
        }
        sumf += d4d8 * (sumi1 + sumi2) as f32;
    }
    sumf
}

/// TQ2_0 · Q8_K (ternary, 2 bits each: bits 2l..2l+2 of `qs[32*c + k]` are element
/// `128*c + 32*l + k`; `x = d * (q - 1)`). Matches the NEON branch of
/// `ggml_vec_dot_tq2_0_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_tq2_0_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m3 = vdupq_n_u8(3);
    let one = vdupq_n_s8(1);
    let mut sumf = 0f32;
    for (x, y) in blocks::<TQ2_0, Q8K>(n, QK_K, w, a) {
        let (yd, q8, _) = q8k(y);
        let mut acc = vdupq_n_s32(0);
        for c in 0..QK_K / 128 {
            let (b0, b1) = (load_u8(&x[32 * c..]), load_u8(&x[32 * c + 16..]));
            for l in 0..4 {
                let shift = vdupq_n_s8(-2 * l as i8);
                let q8 = &q8[128 * c + 32 * l..];
                let v0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b0, shift), m3)), one);
                let v1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b1, shift), m3)), one);
                acc = D::dot(D::dot(acc, v0, load_s8(q8)), v1, load_s8(&q8[16..]));
            }
        }
        let d = yd * fp16(&x[64..]);
        sumf += vaddvq_s32(acc) as f32 * d;
    }
    sumf
}

/// The trits at `(q * 3^l mod 256)`: `((q * 3^l mod 256) * 3) >> 8`, computed without
/// widening as `(q + q / 2) >> 7` (ggml's `vhaddq_u8` step), minus 1.
#[inline]
#[target_feature(enable = "neon")]
fn trits(q: uint8x16_t, pow3: uint8x16_t) -> int8x16_t {
    let q = vmulq_u8(q, pow3);
    let t = vshrq_n_u8::<6>(vhaddq_u8(q, vshrq_n_u8::<1>(q)));
    vsubq_s8(vreinterpretq_s8_u8(t), vdupq_n_s8(1))
}

/// TQ1_0 · Q8_K (ternary: `qs` packs 5 trits per byte, most significant first, `qh` 4 per
/// byte; `x = d * (t - 1)`). Matches the NEON branch of `ggml_vec_dot_tq1_0_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_tq1_0_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    const QH_IDX: [u8; 16] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];
    const QH_POW3: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    let mut sumf = 0f32;
    for (x, y) in blocks::<TQ1_0, Q8K>(n, QK_K, w, a) {
        let (yd, q8, _) = q8k(y);
        let mut acc = vdupq_n_s32(0);
        // qs[0..32]: trit l of byte m is element 32*l + m.
        let (b0, b1) = (load_u8(x), load_u8(&x[16..]));
        for (l, &p) in POW3.iter().enumerate() {
            let p = vdupq_n_u8(p);
            let q8 = &q8[32 * l..];
            acc = D::dot(acc, trits(b0, p), load_s8(q8));
            acc = D::dot(acc, trits(b1, p), load_s8(&q8[16..]));
        }
        // qs[32..48]: trit l of byte m is element 160 + 16*l + m.
        let b2 = load_u8(&x[32..]);
        for (l, &p) in POW3.iter().enumerate() {
            acc = D::dot(acc, trits(b2, vdupq_n_u8(p)), load_s8(&q8[160 + 16 * l..]));
        }
        // qh[0..4]: trit l of byte j is element 240 + 4*l + j.
        let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes([
            x[48], x[49], x[50], x[51],
        ])));
        let qh = vqtbl1q_u8(qh, load_u8(&QH_IDX));
        acc = D::dot(acc, trits(qh, load_u8(&QH_POW3)), load_s8(&q8[240..]));
        sumf += vaddvq_s32(acc) as f32 * (fp16(&x[52..]) * yd);
    }
    sumf
}

/// Q1_0 · Q8_0 (128 weights: `d: f16, qs: [u8; 16]`, bit `i` set means `+d`, clear `-d`): one
/// weight block meets four Q8_0 blocks. Matches the NEON branch of `ggml_vec_dot_q1_0_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q1_0_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let two = vdupq_n_u8(2);
    let one = vdupq_n_s8(1);
    let mut sumf = 0f32;
    for (x, y4) in blocks::<Q1_0, { 4 * Q8_0 }>(n, 128, w, a) {
        let mut sumi = 0f32;
        for (k, yb) in y4.chunks_exact(Q8_0).enumerate() {
            let (m0, m1) = bytes_from_bits_32(&x[2 + 4 * k..]);
            // 0xFF where set → +1, else -1.
            let v0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(m0, two)), one);
            let v1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(m1, two)), one);
            let p = D::dot(
                D::dot(vdupq_n_s32(0), v0, load_s8(&yb[2..])),
                v1,
                load_s8(&yb[18..]),
            );
            sumi += fp16(yb) * vaddvq_s32(p) as f32;
        }
        sumf += fp16(x) * sumi;
    }
    sumf
}

/// Q2_0 · Q8_0 (64 weights: `d: f16, qs: [u8; 16]`, four 2-bit codes per byte from the low bits
/// up, `x = d * (q - 1)`): one weight block meets two Q8_0 blocks. Matches the NEON branch of
/// `ggml_vec_dot_q2_0_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q2_0_q8_0<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // Element j of a 32-element half is code j % 4 of byte j / 4.
    const IDX_LO: [u8; 16] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];
    const IDX_HI: [u8; 16] = [4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7];
    const SHIFTS: [i8; 16] = [0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6];
    let (idx_lo, idx_hi) = (load_u8(&IDX_LO), load_u8(&IDX_HI));
    let shifts = load_s8(&SHIFTS.map(|s| s as u8));
    let m3 = vdupq_n_u8(3);
    let one = vdupq_n_s8(1);
    let codes = |bytes: uint8x16_t, idx: uint8x16_t| {
        let v = vandq_u8(vshlq_u8(vqtbl1q_u8(bytes, idx), shifts), m3);
        vsubq_s8(vreinterpretq_s8_u8(v), one)
    };
    let mut sumf = 0f32;
    for (x, y2) in blocks::<Q2_0, { 2 * Q8_0 }>(n, 64, w, a) {
        let qs = load_u8(&x[2..]);
        // The second Q8_0 block reads bytes 8..16.
        let qs_hi = vextq_u8::<8>(qs, qs);
        let mut sumi = 0f32;
        for (k, yb) in y2.chunks_exact(Q8_0).enumerate() {
            let b = if k == 0 { qs } else { qs_hi };
            let p = D::dot(
                D::dot(vdupq_n_s32(0), codes(b, idx_lo), load_s8(&yb[2..])),
                codes(b, idx_hi),
                load_s8(&yb[18..]),
            );
            sumi += fp16(yb) * vaddvq_s32(p) as f32;
        }
        sumf += fp16(x) * sumi;
    }
    sumf
}
