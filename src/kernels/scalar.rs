//! Scalar kernels: the reference every SIMD kernel is tested against. Each `vec_dot_*` matches
//! ggml's `ggml_vec_dot_*_generic` in `ggml-cpu/quants.c` (or `ggml_vec_dot_f32/f16/bf16` in
//! `ggml-cpu/vec.cpp` without `GGML_SIMD`): the same integer sums per block and the same order of
//! float operations. Products and sums are written as separate operations (Rust never fuses them
//! into an FMA); a C compiler allowed to contract may differ from these in the last bit.
//!
//! Every kernel has the [`VecDot`] signature: `n` elements, the weight row `w` as whole blocks of
//! the weight type, the activation row `a` as whole blocks of the weight type's `vec_dot_type`.
//! Bytes are viewed as ggml's block structs (little-endian, as ggml writes them); misaligned
//! bytes are copied first. The kernels never panic on short or odd-length input: they use the
//! whole blocks present, up to `n` elements. A wrong length is a programming error that callers
//! (see `matmul`) check before calling.

use super::{TypeKernels, VecDot};
use bytemuck::Pod;
use ggml_compat::blocks::*;
// `h`: ggml's `GGML_CPU_FP16_TO_FP32`, short because it appears in every formula.
use ggml_compat::quant::float::{bf16_to_fp32, e8m0_to_fp32_half, fp16_to_fp32 as h};
use ggml_compat::quant::tables::{KVALUES_IQ4NL, KVALUES_MXFP4};
use ggml_compat::{GgmlType, QK_K};
use half::f16;

/// The kernel table: one entry per weight type kiln can multiply with, paired with its
/// `vec_dot_type` as in ggml's `type_traits_cpu[]` (`ggml-cpu/ggml-cpu.c`).
static TABLE: [(GgmlType, TypeKernels); 20] = {
    use GgmlType::*;
    const fn k(vec_dot_type: GgmlType, vec_dot: VecDot) -> TypeKernels {
        TypeKernels {
            vec_dot_type,
            vec_dot,
        }
    }
    [
        (F32, k(F32, vec_dot_f32)),
        (F16, k(F16, vec_dot_f16)),
        (BF16, k(BF16, vec_dot_bf16)),
        (Q4_0, k(Q8_0, vec_dot_q4_0_q8_0)),
        (Q4_1, k(Q8_1, vec_dot_q4_1_q8_1)),
        (Q5_0, k(Q8_0, vec_dot_q5_0_q8_0)),
        (Q5_1, k(Q8_1, vec_dot_q5_1_q8_1)),
        (Q8_0, k(Q8_0, vec_dot_q8_0_q8_0)),
        (Q2_K, k(Q8_K, vec_dot_q2_k_q8_k)),
        (Q3_K, k(Q8_K, vec_dot_q3_k_q8_k)),
        (Q4_K, k(Q8_K, vec_dot_q4_k_q8_k)),
        (Q5_K, k(Q8_K, vec_dot_q5_k_q8_k)),
        (Q6_K, k(Q8_K, vec_dot_q6_k_q8_k)),
        (IQ4_NL, k(Q8_0, vec_dot_iq4_nl_q8_0)),
        (IQ4_XS, k(Q8_K, vec_dot_iq4_xs_q8_k)),
        (TQ1_0, k(Q8_K, vec_dot_tq1_0_q8_k)),
        (TQ2_0, k(Q8_K, vec_dot_tq2_0_q8_k)),
        (MXFP4, k(Q8_0, vec_dot_mxfp4_q8_0)),
        (Q1_0, k(Q8_0, vec_dot_q1_0_q8_0)),
        (Q2_0, k(Q8_0, vec_dot_q2_0_q8_0)),
    ]
};

/// The scalar kernels of weight type `ty`, or `None` if kiln cannot multiply with it.
pub fn kernels(ty: GgmlType) -> Option<&'static TypeKernels> {
    TABLE.iter().find(|(t, _)| *t == ty).map(|(_, k)| k)
}

/// Every weight type that has scalar kernels, in table order.
pub fn supported_types() -> impl Iterator<Item = GgmlType> {
    TABLE.iter().map(|(t, _)| *t)
}

/// Runs `f` on `bytes` viewed as blocks `B`. Misaligned bytes are copied into an aligned buffer
/// first; a trailing partial block is ignored.
fn with_blocks<B: Pod, R>(bytes: &[u8], f: impl FnOnce(&[B]) -> R) -> R {
    let size = std::mem::size_of::<B>();
    let whole = &bytes[..bytes.len() / size * size];
    match bytemuck::try_cast_slice::<u8, B>(whole) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let mut owned = vec![B::zeroed(); whole.len() / size];
            bytemuck::cast_slice_mut::<B, u8>(&mut owned).copy_from_slice(whole);
            f(&owned)
        }
    }
}

/// [`with_blocks`] for a weight row of blocks `X` and an activation row of blocks `Y`.
pub(super) fn with_rows<X: Pod, Y: Pod>(
    w: &[u8],
    a: &[u8],
    f: impl FnOnce(&[X], &[Y]) -> f32,
) -> f32 {
    with_blocks(w, |x| with_blocks(a, |y| f(x, y)))
}

// ---------------------------------------------------------------------------------------------
// Plain floats: ggml accumulates in `ggml_float` (f64) without GGML_SIMD.

/// F32 · F32. Matches `ggml_vec_dot_f32` (scalar branch): f32 products summed in f64.
pub fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[f32], y: &[f32]| {
        let mut sumf = 0f64;
        for (x, y) in x.iter().zip(y).take(n) {
            sumf += (x * y) as f64;
        }
        sumf as f32
    })
}

/// F16 · F16. Matches `ggml_vec_dot_f16` (scalar branch): f32 products summed in f64.
pub fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[f16], y: &[f16]| {
        let mut sumf = 0f64;
        for (x, y) in x.iter().zip(y).take(n) {
            sumf += (h(*x) * h(*y)) as f64;
        }
        sumf as f32
    })
}

/// BF16 · BF16. Matches `ggml_vec_dot_bf16` (scalar loop): f32 products summed in f64.
pub fn vec_dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[u16], y: &[u16]| {
        let mut sumf = 0f64;
        for (x, y) in x.iter().zip(y).take(n) {
            sumf += (bf16_to_fp32(*x) * bf16_to_fp32(*y)) as f64;
        }
        sumf as f32
    })
}

// ---------------------------------------------------------------------------------------------
// 32-element blocks against Q8_0 / Q8_1. In the weight block, byte j holds element j in its low
// nibble and element j + 16 in its high nibble.

const QK: usize = 32;

/// Q4_0 · Q8_0 (`d: f16, qs: [u8; 16]`, `x = d * (q - 8)`). Matches
/// `ggml_vec_dot_q4_0_q8_0_generic`.
pub fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ4_0], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK / 2 {
                let v0 = (x.qs[j] & 0x0F) as i32 - 8;
                let v1 = (x.qs[j] >> 4) as i32 - 8;
                sumi0 += v0 * y.qs[j] as i32;
                sumi1 += v1 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * h(x.d) * h(y.d);
        }
        sumf
    })
}

/// Q4_1 · Q8_1 (`d, m: f16, qs: [u8; 16]`, `x = d * q + m`). Matches
/// `ggml_vec_dot_q4_1_q8_1_generic`; the min term uses Q8_1's precomputed `s = d * sum(q)`.
pub fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ4_1], y: &[BlockQ8_1]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK / 2 {
                sumi0 += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
                sumi1 += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (h(x.d) * h(y.d)) * sumi as f32 + h(x.m) * h(y.s);
        }
        sumf
    })
}

/// Q5_0 · Q8_0 (`d: f16, qh: [u8; 4], qs: [u8; 16]`, `x = d * (q - 16)`, bit j of `qh` is the
/// fifth bit of element j). Matches `ggml_vec_dot_q5_0_q8_0_generic`.
pub fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ5_0], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let qh = u32::from_le_bytes(x.qh);
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK / 2 {
                let h0 = (((qh >> j) & 1) << 4) as u8;
                let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
                let x0 = ((x.qs[j] & 0x0F) | h0) as i32 - 16;
                let x1 = ((x.qs[j] >> 4) | h1) as i32 - 16;
                sumi0 += x0 * y.qs[j] as i32;
                sumi1 += x1 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (h(x.d) * h(y.d)) * sumi as f32;
        }
        sumf
    })
}

/// Q5_1 · Q8_1 (`d, m: f16, qh: [u8; 4], qs: [u8; 16]`, `x = d * q + m`). Matches
/// `ggml_vec_dot_q5_1_q8_1_generic`.
pub fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ5_1], y: &[BlockQ8_1]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let qh = u32::from_le_bytes(x.qh);
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                let x0 = (x.qs[j] & 0x0F) as i32 | h0 as i32;
                let x1 = (x.qs[j] >> 4) as i32 | h1 as i32;
                sumi0 += x0 * y.qs[j] as i32;
                sumi1 += x1 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (h(x.d) * h(y.d)) * sumi as f32 + h(x.m) * h(y.s);
        }
        sumf
    })
}

/// Q8_0 · Q8_0 (`d: f16, qs: [i8; 32]`). Matches `ggml_vec_dot_q8_0_q8_0_generic`.
pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ8_0], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let sumi: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sumf += sumi as f32 * (h(x.d) * h(y.d));
        }
        sumf
    })
}

/// Sum over one 32-element block of `q8[j] * table[nibble]`, low nibbles against the first 16
/// activations and high nibbles against the last 16 (the IQ4_NL / MXFP4 layout).
#[inline]
fn table_dot(qs: &[u8], q8: &[i8], table: &[i8; 16]) -> i32 {
    let (mut sumi1, mut sumi2) = (0i32, 0i32);
    for j in 0..16 {
        sumi1 += q8[j] as i32 * table[(qs[j] & 0xF) as usize] as i32;
        sumi2 += q8[j + 16] as i32 * table[(qs[j] >> 4) as usize] as i32;
    }
    sumi1 + sumi2
}

/// IQ4_NL · Q8_0 (`d: f16, qs: [u8; 16]`, `x = d * kvalues_iq4nl[q]`). Matches
/// `ggml_vec_dot_iq4_nl_q8_0_generic`.
pub fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockIQ4NL], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let d = h(y.d) * h(x.d);
            sumf += d * table_dot(&x.qs, &y.qs, &KVALUES_IQ4NL) as f32;
        }
        sumf
    })
}

/// MXFP4 · Q8_0 (`e: u8` E8M0 exponent, `qs: [u8; 16]` E2M1 codes; `x = 2^(e-128) *
/// kvalues_mxfp4[q]`). Matches `ggml_vec_dot_mxfp4_q8_0_generic`.
pub fn vec_dot_mxfp4_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockMXFP4], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK) {
            let d = h(y.d) * e8m0_to_fp32_half(x.e);
            sumf += d * table_dot(&x.qs, &y.qs, &KVALUES_MXFP4) as f32;
        }
        sumf
    })
}

/// Q1_0 · Q8_0 (128 weights: `d: f16, qs: [u8; 16]`, bit `i` set means `+d`, clear `-d`).
/// One weight block meets four Q8_0 blocks; each contributes `d8 * sum` to a per-block f32
/// before the weight scale is applied. Matches `ggml_vec_dot_q1_0_q8_0_generic`.
pub fn vec_dot_q1_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ1_0], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y4) in x.iter().zip(y.chunks_exact(4)).take(n / 128) {
            let mut sumi = 0f32;
            for (k, yb) in y4.iter().enumerate() {
                let mut sumi_block = 0i32;
                for (j, &q) in yb.qs.iter().enumerate() {
                    let bit = (x.qs[k * 4 + j / 8] >> (j % 8)) & 1;
                    sumi_block += if bit != 0 { q as i32 } else { -(q as i32) };
                }
                sumi += h(yb.d) * sumi_block as f32;
            }
            sumf += h(x.d) * sumi;
        }
        sumf
    })
}

/// Q2_0 · Q8_0 (64 weights: `d: f16, qs: [u8; 16]`, four 2-bit codes per byte from the low bits
/// up, `x = d * (q - 1)`). One weight block meets two Q8_0 blocks. Matches
/// `ggml_vec_dot_q2_0_q8_0_generic`.
pub fn vec_dot_q2_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ2_0], y: &[BlockQ8_0]| {
        let mut sumf = 0f32;
        for (x, y2) in x.iter().zip(y.chunks_exact(2)).take(n / 64) {
            let mut sumi = 0f32;
            for (k, yb) in y2.iter().enumerate() {
                let mut sumi_block = 0i32;
                for (j, &q) in yb.qs.iter().enumerate() {
                    let code = (x.qs[k * 8 + j / 4] >> (2 * (j % 4))) & 3;
                    sumi_block += (code as i32 - 1) * q as i32;
                }
                sumi += h(yb.d) * sumi_block as f32;
            }
            sumf += h(x.d) * sumi;
        }
        sumf
    })
}

// ---------------------------------------------------------------------------------------------
// 256-element super-blocks against Q8_K (`d: f32, qs: [i8; 256], bsums: [i16; 16]`).

/// ggml's scalar K-quant accumulation: eight integer lanes, lane `l` summing
/// `scale(group) * q8[i] * q[i]` over the positions `i ≡ l (mod 8)`, where `group = i / group_len`.
/// The lanes matter: ggml turns each lane into a float separately.
#[inline]
fn scaled_lanes(
    q8: &[i8; QK_K],
    q: &[i8; QK_K],
    group_len: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (i, (&p, &v)) in q8.iter().zip(q).enumerate() {
        aux32[i % 8] += scale(i / group_len) * (p as i32 * v as i32);
    }
    aux32
}

/// Q2_K · Q8_K (16 groups of 16: `scales` low nibble = scale, high nibble = min; 2-bit q;
/// `x = d * sc * q - dmin * m`). Matches `ggml_vec_dot_q2_K_q8_K_generic`.
pub fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ2K], y: &[BlockQ8K]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let summs: i32 = (0..16)
                .map(|j| y.bsums[j] as i32 * (x.scales[j] >> 4) as i32)
                .sum();
            let dall = y.d * h(x.d);
            let dmin = y.d * h(x.dmin);
            // Element 128*c + 32*s + l is bits 2s..2s+2 of qs[32*c + l]; groups of 16.
            let mut isum = 0i32;
            for (i, &q8) in y.qs.iter().enumerate() {
                let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
                let q = (x.qs[32 * c + l] >> (2 * s)) & 3;
                let d = (x.scales[i / 16] & 0xF) as i32;
                isum += d * (q8 as i32 * q as i32);
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    })
}

/// The sixteen 6-bit Q3_K scales, unpacked from 12 bytes as ggml's kmask shuffle does.
fn q3_k_scales(packed: &[u8; 12]) -> [i8; 16] {
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
    let mut out = [0i8; 16];
    for (k, w) in aux.iter().enumerate() {
        for (b, byte) in w.to_le_bytes().into_iter().enumerate() {
            out[4 * k + b] = byte as i8;
        }
    }
    out
}

/// Q3_K · Q8_K (16 groups of 16: 6-bit scales biased by 32, 2 low bits in `qs`, the high bit
/// in `hmask` where a clear bit subtracts 4; `x = d * (sc - 32) * q`). Matches
/// `ggml_vec_dot_q3_K_q8_K_generic`.
pub fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ3K], y: &[BlockQ8K]| {
        let mut sums = [0f32; 8];
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            // Element 128*c + 32*s + l: bits 2s..2s+2 of qs[32*c + l], high bit (4c + s) of hmask[l].
            let mut q = [0i8; QK_K];
            for (i, v) in q.iter_mut().enumerate() {
                let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
                let low = ((x.qs[32 * c + l] >> (2 * s)) & 3) as i8;
                let high = x.hmask[l] & (1 << (4 * c + s)) != 0;
                *v = low - if high { 0 } else { 4 };
            }
            let scales = q3_k_scales(&x.scales);
            let aux32 = scaled_lanes(&y.qs, &q, 16, |g| scales[g] as i32 - 32);
            let d = h(x.d) * y.d;
            for (s, &v) in sums.iter_mut().zip(&aux32) {
                *s += d * v as f32;
            }
        }
        sums.iter().fold(0f32, |acc, &s| acc + s)
    })
}

/// The eight 6-bit scales and eight 6-bit mins of Q4_K / Q5_K (ggml's `utmp` kmask shuffle).
pub(super) fn k_scales_mins(packed: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (u0, u1, u2) = (word(0), word(4), word(8));
    let scales = [u0 & KMASK1, (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4)];
    let mins = [
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ];
    let bytes = |w: [u32; 2]| {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&w[0].to_le_bytes());
        out[4..].copy_from_slice(&w[1].to_le_bytes());
        out
    };
    (bytes(scales), bytes(mins))
}

/// The shared tail of Q4_K and Q5_K: `q` holds the unsigned quants of one super-block.
/// Accumulates the scaled lanes into `sums` and subtracts the mins term from `sumf`, in ggml's
/// order.
fn k_block_4_5(
    q: &[i8; QK_K],
    packed: &[u8; K_SCALE_SIZE],
    d: f16,
    dmin: f16,
    y: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let (scales, mins) = k_scales_mins(packed);
    let sumi: i32 = (0..QK_K / 16)
        .map(|j| y.bsums[j] as i32 * mins[j / 2] as i32)
        .sum();
    let aux32 = scaled_lanes(&y.qs, q, 32, |g| scales[g] as i32);
    let d = h(d) * y.d;
    for (s, &v) in sums.iter_mut().zip(&aux32) {
        *s += d * v as f32;
    }
    let dmin = h(dmin) * y.d;
    *sumf -= dmin * sumi as f32;
}

/// Q4_K · Q8_K (8 groups of 32: 6-bit scales and mins, 4-bit q; byte `32*c + l` of `qs` holds
/// element `64*c + l` low and `64*c + 32 + l` high; `x = d * sc * q - dmin * m`). Matches
/// `ggml_vec_dot_q4_K_q8_K_generic`.
pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ4K], y: &[BlockQ8K]| {
        let mut sums = [0f32; 8];
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let mut q = [0i8; QK_K];
            for (i, v) in q.iter_mut().enumerate() {
                let byte = x.qs[32 * (i / 64) + i % 32];
                *v = if i % 64 < 32 { byte & 0xF } else { byte >> 4 } as i8;
            }
            k_block_4_5(&q, &x.scales, x.d, x.dmin, y, &mut sums, &mut sumf);
        }
        sums.iter().fold(sumf, |acc, &s| acc + s)
    })
}

/// Q5_K · Q8_K (as Q4_K, plus a fifth bit: bit `i / 32` of `qh[i % 32]` adds 16). Matches
/// `ggml_vec_dot_q5_K_q8_K_generic`.
pub fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ5K], y: &[BlockQ8K]| {
        let mut sums = [0f32; 8];
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let mut q = [0i8; QK_K];
            for (i, v) in q.iter_mut().enumerate() {
                let byte = x.qs[32 * (i / 64) + i % 32];
                let low = if i % 64 < 32 { byte & 0xF } else { byte >> 4 };
                let high = if x.qh[i % 32] & (1 << (i / 32)) != 0 {
                    16
                } else {
                    0
                };
                *v = (low + high) as i8;
            }
            k_block_4_5(&q, &x.scales, x.d, x.dmin, y, &mut sums, &mut sumf);
        }
        sums.iter().fold(sumf, |acc, &s| acc + s)
    })
}

/// Q6_K · Q8_K (16 groups of 16: signed 8-bit scales, 6-bit q biased by 32; low 4 bits in `ql`,
/// high 2 in `qh`; `x = d * sc * (q - 32)`). Matches `ggml_vec_dot_q6_K_q8_K_generic`.
pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockQ6K], y: &[BlockQ8K]| {
        let mut sums = [0f32; 8];
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            // Element 128*c + 32*s + l: nibble (s / 2) of ql[64*c + 32*(s % 2) + l], high bits
            // 2s..2s+2 of qh[32*c + l].
            let mut q = [0i8; QK_K];
            for (i, v) in q.iter_mut().enumerate() {
                let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
                let ql = x.ql[64 * c + 32 * (s % 2) + l];
                let low = if s < 2 { ql & 0xF } else { ql >> 4 };
                let high = (x.qh[32 * c + l] >> (2 * s)) & 3;
                *v = (low | (high << 4)) as i8 - 32;
            }
            let aux32 = scaled_lanes(&y.qs, &q, 16, |g| x.scales[g] as i32);
            let d = h(x.d) * y.d;
            for (s, &v) in sums.iter_mut().zip(&aux32) {
                *s += d * v as f32;
            }
        }
        sums.iter().fold(0f32, |acc, &s| acc + s)
    })
}

/// IQ4_XS · Q8_K (8 groups of 32: 6-bit scales biased by 32, low 4 bits in `scales_l`, high 2
/// in `scales_h`; IQ4_NL levels). Matches `ggml_vec_dot_iq4_xs_q8_K_generic`.
pub fn vec_dot_iq4_xs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockIQ4XS], y: &[BlockQ8K]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let d4d8 = h(x.d) * y.d;
            for ib in 0..QK_K / 32 {
                let low = (x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
                let high = ((x.scales_h >> (2 * ib)) & 3) as u8;
                let ls = (low | (high << 4)) as i32;
                let dl = d4d8 * (ls - 32) as f32;
                let qs = &x.qs[16 * ib..16 * ib + 16];
                let q8 = &y.qs[32 * ib..32 * ib + 32];
                sumf += dl * table_dot(qs, q8, &KVALUES_IQ4NL) as f32;
            }
        }
        sumf
    })
}

/// TQ1_0 · Q8_K (ternary: `qs` packs 5 trits per byte in base 3 with the most significant trit
/// first, `qh` 4 per byte; `x = d * (t - 1)`). Matches `ggml_vec_dot_tq1_0_q8_K_generic`.
pub fn vec_dot_tq1_0_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    // The l-th trit of a byte: multiply by 3^l (mod 256) to shift it to the top, then read the
    // top trit as (q * 3) >> 8.
    let trit = |byte: u8, l: usize| ((byte.wrapping_mul(POW3[l]) as u16 * 3) >> 8) as i32 - 1;
    with_rows(w, a, |x: &[BlockTQ1_0], y: &[BlockQ8K]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let mut sum = 0i32;
            // qs[0..32]: trit l of byte m is element 32*l + m; qs[32..48]: element 160 + 16*l + m.
            for (start, width) in [(0usize, 32usize), (32, 16)] {
                for l in 0..5 {
                    for m in 0..width {
                        let q8 = y.qs[start * 5 + l * width + m] as i32;
                        sum += trit(x.qs[start + m], l) * q8;
                    }
                }
            }
            // qh: trit l of byte j is element 240 + 4*l + j.
            for l in 0..4 {
                for (j, &byte) in x.qh.iter().enumerate() {
                    sum += trit(byte, l) * y.qs[x.qs.len() * 5 + l * x.qh.len() + j] as i32;
                }
            }
            sumf += sum as f32 * (h(x.d) * y.d);
        }
        sumf
    })
}

/// TQ2_0 · Q8_K (ternary, 2 bits each: bits 2l..2l+2 of `qs[32*c + k]` are element
/// `128*c + 32*l + k`; `x = d * (q - 1)`). Matches `ggml_vec_dot_tq2_0_q8_K_generic`.
pub fn vec_dot_tq2_0_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_rows(w, a, |x: &[BlockTQ2_0], y: &[BlockQ8K]| {
        let mut sumf = 0f32;
        for (x, y) in x.iter().zip(y).take(n / QK_K) {
            let mut sumi = 0i32;
            for (i, &q8) in y.qs.iter().enumerate() {
                let (c, l, k) = (i / 128, (i % 128) / 32, i % 32);
                let q = ((x.qs[32 * c + k] >> (2 * l)) & 3) as i32 - 1;
                sumi += q8 as i32 * q;
            }
            let d = y.d * h(x.d);
            sumf += sumi as f32 * d;
        }
        sumf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pairs_each_type_once_with_a_type_of_matching_blocks() {
        let types: Vec<_> = supported_types().collect();
        for (i, t) in types.iter().enumerate() {
            assert!(!types[..i].contains(t), "{t} listed twice");
            let k = kernels(*t).unwrap();
            // A weight row of whole blocks must also be whole activation blocks.
            assert_eq!(
                t.block_size() % k.vec_dot_type.block_size(),
                0,
                "{t} vs {}",
                k.vec_dot_type
            );
        }
        assert!(kernels(GgmlType::IQ2_XXS).is_none());
        assert!(kernels(GgmlType::Q8_K).is_none());
    }

    /// Deterministic pseudo-random bytes (xorshift), good enough to fill blocks.
    fn bytes(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    /// Random bytes are not valid blocks (f16 scales may be NaN), so compare bit patterns.
    #[test]
    fn misaligned_and_short_inputs_are_handled_without_panic() {
        for ty in supported_types() {
            let k = kernels(ty).unwrap();
            let n = 512;
            let wn = ty.row_bytes(n as u64).unwrap() as usize;
            let an = k.vec_dot_type.row_bytes(n as u64).unwrap() as usize;
            let mut wbuf = vec![0u64; wn / 8 + 2];
            let mut abuf = vec![0u64; an / 8 + 2];
            let wb: &mut [u8] = bytemuck::cast_slice_mut(&mut wbuf);
            let ab: &mut [u8] = bytemuck::cast_slice_mut(&mut abuf);
            let (w, a) = (bytes(wn, 1 + ty.id() as u64), bytes(an, 99));
            wb[..wn].copy_from_slice(&w);
            ab[..an].copy_from_slice(&a);
            let aligned = (k.vec_dot)(n, &wb[..wn], &ab[..an]);
            wb[1..wn + 1].copy_from_slice(&w);
            ab[1..an + 1].copy_from_slice(&a);
            let shifted = (k.vec_dot)(n, &wb[1..wn + 1], &ab[1..an + 1]);
            assert_eq!(aligned.to_bits(), shifted.to_bits(), "{ty}");
            // Short and odd-length rows: no panic, whatever the value.
            let _ = (k.vec_dot)(n, &w[..wn / 2 + 1], &a[..an - 1]);
            let _ = (k.vec_dot)(n, &[], &a);
        }
    }
}
