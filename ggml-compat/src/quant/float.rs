//! Plain floats: F32, F16 (IEEE half), BF16 (ggml's rounding). All little-endian.

use super::common::fp32_to_fp16;
use super::QuantFns;
use half::f16;

pub const F32: QuantFns = QuantFns {
    to_float: f32_to_float,
    quantize: f32_from_float,
    uses_imatrix: false,
};
pub const F16: QuantFns = QuantFns {
    to_float: fp16_to_fp32_row,
    quantize: fp32_to_fp16_row,
    uses_imatrix: false,
};
pub const BF16: QuantFns = QuantFns {
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

/// ggml's `ggml_fp16_to_fp32_row`: exact widening.
pub fn fp16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// ggml's `ggml_fp32_to_fp16_row` (`GGML_FP32_TO_FP16` per element): round to nearest even,
/// NaN to the quiet NaN `0x7e00` with its sign.
fn fp32_to_fp16_row(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (b, &x) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&fp32_to_fp16(x).to_le_bytes());
    }
}

/// ggml's `ggml_compute_bf16_to_fp32`: the 16 bits become the top half of an f32.
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaN keeps its top 16 bits with the quiet bit (0x40)
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
