//! 256-element super-blocks against Q8_K (`d: f32, qs: [i8; 256], bsums: [i16; 16]`): ggml's
//! `__ARM_NEON` branches of the K-quant dot products. Integer sums per super-block, then one
//! float multiply-add each, as ggml's NEON code does.

use super::*;
use crate::kernels::scalar::k_scales_mins;
use ggml_compat::blocks::K_SCALE_SIZE;

/// The Q8_K activation block's scale, quants and per-16 sums.
#[inline(always)]
fn q8k(y: &[u8; Q8K]) -> (f32, &[u8], &[u8]) {
    (f32_at(y), &y[Q8K_QS..Q8K_QS + QK_K], &y[Q8K_BSUMS..])
}

/// `sum_g bsums32[g] * mins[g]`, where `bsums32` pairs up Q8_K's sixteen 16-sums into eight
/// 32-sums (`vpaddq_s16`): the mins term of Q4_K / Q5_K.
#[inline]
#[target_feature(enable = "neon")]
fn mins_dot(bsums: &[u8], mins: &[u8; 8]) -> i32 {
    let q8sums = vpaddq_s16(load_s16(bsums), load_s16(&bsums[16..]));
    // SAFETY: `mins` is 8 readable bytes.
    let mins = vreinterpretq_s16_u16(vmovl_u8(unsafe { vld1_u8(mins.as_ptr()) }));
    let prod = vaddq_s32(
        vmull_s16(vget_low_s16(q8sums), vget_low_s16(mins)),
        vmull_high_s16(q8sums, mins),
    );
    vaddvq_s32(prod)
}

/// `a0 · q8[0..16] + a1 · q8[16..32]`.
#[inline]
#[target_feature(enable = "neon")]
fn dot32<D: Dot>(a0: uint8x16_t, a1: uint8x16_t, q8: &[u8]) -> i32 {
    let p = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(a0), load_s8(q8));
    vaddvq_s32(D::dot(p, vreinterpretq_s8_u8(a1), load_s8(&q8[16..])))
}

/// Q4_K · Q8_K (8 groups of 32: 6-bit scales and mins, 4-bit q; `x = d * sc * q - dmin * m`).
/// Matches the NEON branch of `ggml_vec_dot_q4_K_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q4_k_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4b = vdupq_n_u8(0x0F);
    let mut sumf = 0f32;
    for (x, y) in blocks::<Q4K, Q8K>(n, QK_K, w, a) {
        let (yd, q8, bsums) = q8k(y);
        let d = yd * fp16(x);
        let dmin = yd * fp16(&x[2..]);
        let packed: &[u8; K_SCALE_SIZE] = x[4..16].try_into().unwrap();
        let (scales, mins) = k_scales_mins(packed);
        sumf -= dmin * mins_dot(bsums, &mins) as f32;
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK_K / 64 {
            let q4 = &x[16 + 32 * j..];
            let q8 = &q8[64 * j..];
            let (b0, b1) = (load_u8(q4), load_u8(&q4[16..]));
            sumi1 += dot32::<D>(vandq_u8(b0, m4b), vandq_u8(b1, m4b), q8) * scales[2 * j] as i32;
            sumi2 += dot32::<D>(vshrq_n_u8::<4>(b0), vshrq_n_u8::<4>(b1), &q8[32..])
                * scales[2 * j + 1] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

/// Q5_K · Q8_K (as Q4_K, plus a fifth bit: bit `i / 32` of `qh[i % 32]` adds 16). Matches the
/// NEON branch of `ggml_vec_dot_q5_K_q8_K`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q5_k_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4b = vdupq_n_u8(0x0F);
    let (mone, mtwo) = (vdupq_n_u8(1), vdupq_n_u8(2));
    let mut sumf = 0f32;
    for (x, y) in blocks::<Q5K, Q8K>(n, QK_K, w, a) {
        let (yd, q8, bsums) = q8k(y);
        let d = yd * fp16(x);
        let dmin = yd * fp16(&x[2..]);
        let packed: &[u8; K_SCALE_SIZE] = x[4..16].try_into().unwrap();
        let (scales, mins) = k_scales_mins(packed);
        sumf -= dmin * mins_dot(bsums, &mins) as f32;
        let (mut qh0, mut qh1) = (load_u8(&x[16..]), load_u8(&x[32..]));
        let mut sumi = 0i32;
        for j in 0..QK_K / 64 {
            let q5 = &x[48 + 32 * j..];
            let q8 = &q8[64 * j..];
            let (b0, b1) = (load_u8(q5), load_u8(&q5[16..]));
            let h0 = vshlq_n_u8::<4>(vandq_u8(mone, qh0));
            let h1 = vshlq_n_u8::<4>(vandq_u8(mone, qh1));
            let h2 = vshlq_n_u8::<3>(vandq_u8(mtwo, qh0));
            let h3 = vshlq_n_u8::<3>(vandq_u8(mtwo, qh1));
            qh0 = vshrq_n_u8::<2>(qh0);
            qh1 = vshrq_n_u8::<2>(qh1);
            let lo = dot32::<D>(
                vorrq_u8(vandq_u8(b0, m4b), h0),
                vorrq_u8(vandq_u8(b1, m4b), h1),
                q8,
            );
            let hi = dot32::<D>(
                vorrq_u8(vshrq_n_u8::<4>(b0), h2),
                vorrq_u8(vshrq_n_u8::<4>(b1), h3),
                &q8[32..],
            );
            sumi += lo * scales[2 * j] as i32;
            sumi += hi * scales[2 * j + 1] as i32;
        }
        sumf += d * sumi as f32;
    }
    sumf
}

/// Q6_K · Q8_K (16 groups of 16: signed 8-bit scales, 6-bit q biased by 32; low 4 bits in
/// `ql`, high 2 in `qh`; `x = d * sc * (q - 32)`). Matches the NEON branch of
/// `ggml_vec_dot_q6_K_q8_K`: the bias is taken out once, as `32 * sum(bsums * scales)`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_q6_k_q8_k<D: Dot>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let m4b = vdupq_n_u8(0x0F);
    let mone = vdupq_n_u8(3);
    let mut sum = 0f32;
    for (x, y) in blocks::<Q6K, Q8K>(n, QK_K, w, a) {
        let (yd, q8, bsums) = q8k(y);
        let d_all = fp16(&x[208..]);
        let sc = &x[192..208];
        let scales = load_s8(sc);
        let (s0, s1) = (vmovl_s8(vget_low_s8(scales)), vmovl_high_s8(scales));
        let (b0, b1) = (load_s16(bsums), load_s16(&bsums[16..]));
        let prod = vaddq_s32(
            vaddq_s32(
                vmull_s16(vget_low_s16(b0), vget_low_s16(s0)),
                vmull_high_s16(b0, s0),
            ),
            vaddq_s32(
                vmull_s16(vget_low_s16(b1), vget_low_s16(s1)),
                vmull_high_s16(b1, s1),
            ),
        );
        let isum_mins = vaddvq_s32(prod);
        let scale = |k: usize| sc[k] as i8 as i32;
        let mut isum = 0i32;
        for j in 0..QK_K / 128 {
            let ql = &x[64 * j..];
            let qh = &x[128 + 32 * j..];
            let q8 = &q8[128 * j..];
            let (qh0, qh1) = (load_u8(qh), load_u8(&qh[16..]));
            let ql: [uint8x16_t; 4] = core::array::from_fn(|k| load_u8(&ql[16 * k..]));
            let dot = |a: uint8x16_t, k: usize| {
                vaddvq_s32(D::dot(
                    vdupq_n_s32(0),
                    vreinterpretq_s8_u8(a),
                    load_s8(&q8[16 * k..]),
                ))
            };
            let hi = |bits: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(mone, bits));
            let low = [
                vorrq_u8(vandq_u8(ql[0], m4b), hi(qh0)),
                vorrq_u8(vandq_u8(ql[1], m4b), hi(qh1)),
                vorrq_u8(vandq_u8(ql[2], m4b), hi(vshrq_n_u8::<2>(qh0))),
                vorrq_u8(vandq_u8(ql[3], m4b), hi(vshrq_n_u8::<2>(qh1))),
            ];
            let high = [
                vorrq_u8(vshrq_n_u8::<4>(ql[0]), hi(vshrq_n_u8::<4>(qh0))),
                vorrq_u8(vshrq_n_u8::<4>(ql[1]), hi(vshrq_n_u8::<4>(qh1))),
                vorrq_u8(vshrq_n_u8::<4>(ql[2]), hi(vshrq_n_u8::<6>(qh0))),
                vorrq_u8(vshrq_n_u8::<4>(ql[3]), hi(vshrq_n_u8::<6>(qh1))),
            ];
            for (k, v) in low.into_iter().enumerate() {
                isum += dot(v, k) * scale(8 * j + k);
            }
            for (k, v) in high.into_iter().enumerate() {
                isum += dot(v, 4 + k) * scale(8 * j + 4 + k);
            }
        }
        sum += d_all * yd * (isum - 32 * isum_mins) as f32;
    }
    sum
}
