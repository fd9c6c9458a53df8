//! ggml's scalar float formats (`ggml-impl.h`): f16 and bf16 with ggml's rounding, and the E8M0
//! block exponent of MXFP4; and the plain-float row types F32, F16, BF16 (little-endian).
//!
//! Every quantizer here uses these, and code outside the crate (kernels) should too rather than
//! keep its own copies: ggml's rounding differs from a plain cast in the NaN cases.

use super::QuantFns;
use half::f16;

pub(crate) const F32: QuantFns = QuantFns {
    to_float: f32_to_float,
    quantize: f32_from_float,
    uses_imatrix: false,
};
pub(crate) const F16: QuantFns = QuantFns {
    to_float: fp16_to_fp32_row,
    quantize: fp32_to_fp16_row,
    uses_imatrix: false,
};
pub(crate) const BF16: QuantFns = QuantFns {
    to_float: bf16_to_fp32_row,
    quantize: fp32_to_bf16_row,
    uses_imatrix: false,
};

/// F32 "dequantization": ggml copies the bytes.
fn f32_to_float(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// F32 "quantization": ggml copies the bytes.
fn f32_from_float(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (b, x) in dst.chunks_exact_mut(4).zip(src) {
        b.copy_from_slice(&x.to_le_bytes());
    }
}

/// ggml's `ggml_compute_fp32_to_fp16` (the portable bit-trick version `GGML_FP32_TO_FP16` uses in
/// `ggml-quants.c`): round to nearest even, overflow to infinity, every NaN to the quiet NaN
/// `0x7e00` with the input's sign.
pub fn fp32_to_fp16(f: f32) -> f16 {
    let scale_to_inf = f32::from_bits(0x7780_0000);
    let scale_to_zero = f32::from_bits(0x0880_0000);
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    let h = (sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        };
    f16::from_bits(h as u16)
}

/// ggml's `GGML_FP16_TO_FP32`: exact widening.
#[inline]
pub fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// ggml's `ggml_e8m0_to_fp32_half`: half of the E8M0 value, `2^(x - 128)`,
/// built from bits (a subnormal for `x < 2`). MXFP4 uses the half because its table holds the
/// E2M1 values doubled.
#[inline]
pub fn e8m0_to_fp32_half(x: u8) -> f32 {
    let bits = if x < 2 {
        0x0020_0000u32 << x
    } else {
        ((x - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// ggml's `ggml_fp16_to_fp32_row`: exact widening.
fn fp16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = fp16_to_fp32(f16::from_le_bytes([b[0], b[1]]));
    }
}

/// ggml's `ggml_fp32_to_fp16_row` (`GGML_FP32_TO_FP16` per element): round to nearest even,
/// NaN to the quiet NaN `0x7e00` with its sign.
fn fp32_to_fp16_row(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (b, &x) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&fp32_to_fp16(x).to_le_bytes());
    }
}

/// ggml's `ggml_compute_bf16_to_fp32` (`GGML_BF16_TO_FP32`): the 16 bits become the top half of an f32.
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// ggml's `ggml_compute_fp32_to_bf16` (`GGML_FP32_TO_BF16`): NaN keeps its top 16 bits with the quiet bit (0x40)
/// forced; everything else rounds to nearest even (overflowing to infinity). Subnormals are
/// rounded, not flushed (ggml flushed them in older versions).
pub fn fp32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml's `ggml_bf16_to_fp32_row`.
fn bf16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = bf16_to_fp32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// ggml's `ggml_fp32_to_bf16_row_ref` (`GGML_FP32_TO_BF16` per element).
fn fp32_to_bf16_row(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (b, &x) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&fp32_to_bf16(x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's bit trick rounds like IEEE (which `half` implements) for every non-NaN input.
    #[test]
    fn fp16_rounding_matches_ieee_round_to_nearest_even() {
        let mut bits = 0u32;
        // A stride coprime to 2^32 visits a spread of exponents, subnormals and halfway cases.
        for _ in 0..2_000_000 {
            bits = bits.wrapping_add(2_654_435_761);
            let f = f32::from_bits(bits);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f).to_bits() & 0x7fff, 0x7e00);
                continue;
            }
            assert_eq!(
                fp32_to_fp16(f).to_bits(),
                f16::from_f32(f).to_bits(),
                "{f:e} ({bits:#010x})"
            );
        }
        // Exact halfway points between f16 neighbours round to even.
        let one_and_half_ulp = f32::from_bits(0x3f80_1000); // 1 + 2^-11
        assert_eq!(fp32_to_fp16(one_and_half_ulp).to_bits(), 0x3c00);
        let three_halves_ulp = f32::from_bits(0x3f80_3000); // 1 + 3*2^-11
        assert_eq!(fp32_to_fp16(three_halves_ulp).to_bits(), 0x3c02);
        assert_eq!(fp32_to_fp16(65520.0).to_bits(), 0x7c00);
    }

    #[test]
    fn e8m0_half_is_two_to_the_e_minus_128() {
        for e in 0..=254u8 {
            assert_eq!(
                e8m0_to_fp32_half(e),
                2f64.powi(e as i32 - 128) as f32,
                "e = {e}"
            );
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3*2^-8 is halfway between 0x3f81 and 0x3f82: ties to even (0x3f82).
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        // A signalling NaN becomes quiet and stays NaN even when its payload is in the low bits.
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0xff80_0001)), 0xffc0);
        assert_eq!(fp32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(bf16_to_fp32(0x3f80), 1.0);
    }
}
