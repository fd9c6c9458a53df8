//! Reference quantization and dequantization, one family per file, byte-for-byte as ggml's
//! `ggml-quants.c`. This is the first of ggml's two tables (`type_traits[]`: to_float and the
//! reference quantizer); the fast kernels live in the `kiln` crate.
//!
//! Every function here works on whole rows: `src.len()` is a multiple of the type's block size.

mod common;
pub mod float;
mod iq4;
mod k_quants;
mod legacy;
mod low_bit;
mod mxfp4;
mod search;
pub mod tables;
mod ternary;

use crate::types::GgmlType;

/// The conversion functions of one type.
pub struct QuantFns {
    /// Dequantize whole blocks: `dst.len() == blocks * block_size`. ggml's `to_float`.
    pub to_float: fn(src: &[u8], dst: &mut [f32]),
    /// Quantize one row, as ggml's `quantize_<type>()` does for `ggml_quantize_chunk`.
    /// `imatrix` (one weight per column of the row) is used only when `uses_imatrix`; without
    /// one this is the reference quantizer (`quantize_row_<type>_ref`) for every type that has one.
    pub quantize: fn(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>),
    /// Whether ggml's quantizer for this type takes an importance matrix.
    pub uses_imatrix: bool,
}

/// Errors from the checked entry points below.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("kiln cannot convert type {0} yet")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} values is not a whole number of {block}-element blocks")]
    NotWholeBlocks {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: buffer of {got} bytes, expected {want}")]
    BadLength {
        ty: GgmlType,
        got: usize,
        want: usize,
    },
    #[error("{ty}: importance matrix has {got} values, the row has {want}")]
    BadImatrix {
        ty: GgmlType,
        got: usize,
        want: usize,
    },
}

/// The conversion functions of `ty`, or `None` if kiln cannot convert it.
pub fn fns(ty: GgmlType) -> Option<&'static QuantFns> {
    use GgmlType::*;
    Some(match ty {
        F32 => &float::F32,
        F16 => &float::F16,
        BF16 => &float::BF16,
        Q4_0 => &legacy::Q4_0,
        Q4_1 => &legacy::Q4_1,
        Q5_0 => &legacy::Q5_0,
        Q5_1 => &legacy::Q5_1,
        Q8_0 => &legacy::Q8_0,
        Q8_1 => &legacy::Q8_1,
        Q2_K => &k_quants::Q2_K,
        Q3_K => &k_quants::Q3_K,
        Q4_K => &k_quants::Q4_K,
        Q5_K => &k_quants::Q5_K,
        Q6_K => &k_quants::Q6_K,
        Q8_K => &k_quants::Q8_K,
        IQ4_NL => &iq4::IQ4_NL,
        IQ4_XS => &iq4::IQ4_XS,
        TQ1_0 => &ternary::TQ1_0,
        TQ2_0 => &ternary::TQ2_0,
        MXFP4 => &mxfp4::MXFP4,
        Q1_0 => &low_bit::Q1_0,
        Q2_0 => &low_bit::Q2_0,
        _ => return None,
    })
}

fn checked(ty: GgmlType, n: usize, bytes: usize) -> Result<&'static QuantFns, QuantError> {
    let f = fns(ty).ok_or(QuantError::Unsupported(ty))?;
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::NotWholeBlocks { ty, n, block });
    }
    let want = n / block * ty.type_size();
    if bytes != want {
        return Err(QuantError::BadLength {
            ty,
            got: bytes,
            want,
        });
    }
    Ok(f)
}

/// Quantize one row `src` into `dst` (exactly the row's byte size), optionally weighted by an
/// importance matrix of `src.len()` values.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let f = checked(ty, src.len(), dst.len())?;
    if let Some(w) = imatrix {
        if w.len() != src.len() {
            return Err(QuantError::BadImatrix {
                ty,
                got: w.len(),
                want: src.len(),
            });
        }
    }
    (f.quantize)(src, dst, imatrix.filter(|_| f.uses_imatrix));
    Ok(())
}

/// Dequantize `src` (whole blocks) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let f = checked(ty, dst.len(), src.len())?;
    (f.to_float)(src, dst);
    Ok(())
}

/// Runs `f` on `bytes` viewed as blocks `B`, copying into an aligned buffer first when the
/// bytes are not aligned for `B` (a `Vec<u8>` or an odd file offset). Panics if `bytes` is not a
/// whole number of blocks: the checked entry points above guarantee it.
pub(crate) fn with_blocks<B: bytemuck::Pod, R>(bytes: &[u8], f: impl FnOnce(&[B]) -> R) -> R {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let size = std::mem::size_of::<B>();
            assert_eq!(bytes.len() % size, 0, "not a whole number of blocks");
            let mut owned = vec![B::zeroed(); bytes.len() / size];
            bytemuck::cast_slice_mut::<B, u8>(&mut owned).copy_from_slice(bytes);
            f(&owned)
        }
    }
}

/// Mutable twin of [`with_blocks`]: `f` fills blocks that end up in `bytes`.
pub(crate) fn with_blocks_mut<B: bytemuck::Pod, R>(
    bytes: &mut [u8],
    f: impl FnOnce(&mut [B]) -> R,
) -> R {
    match bytemuck::try_cast_slice_mut::<u8, B>(bytes) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let size = std::mem::size_of::<B>();
            assert_eq!(bytes.len() % size, 0, "not a whole number of blocks");
            let mut owned = vec![B::zeroed(); bytes.len() / size];
            let r = f(&mut owned);
            bytes.copy_from_slice(bytemuck::cast_slice(&owned));
            r
        }
    }
}

/// ggml's `nearest_int` (`ggml-quants.c`), for every family, including outside the domain its
/// assert guards.
///
/// ggml adds `1.5 * 2^23` in f32 and reads the integer back out of the mantissa:
/// `val = fval + 12582912.f; memcpy(&i, &val, 4); return (i & 0x007fffff) - 0x00400000;`.
/// Within `|x| <= 4194303` (the assert, compiled out of release builds) that is round half to
/// even. Beyond it the trick does not saturate: `±inf` gives `-4194304`, large finite values wrap.
/// The K-quants do get there: a Q4_K/Q5_K super-block with values near 5e6 overflows `dmin` to
/// `inf` in f16 and then rounds `(x + inf) / d`. Doing exactly what ggml does keeps those bytes
/// equal to ggml's.
#[inline]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

#[cfg(test)]
mod tests {
    use super::nearest_int;

    /// ggml's formula written as the C does it: the f32 sum's bytes reinterpreted as an `int`.
    fn ggml_formula(fval: f32) -> i32 {
        let val = fval + 12_582_912.0f32;
        let i = i32::from_ne_bytes(val.to_ne_bytes());
        (i & 0x007f_ffff) - 0x0040_0000
    }

    /// Inside ggml's asserted domain the trick is round half to even.
    #[test]
    fn in_domain_rounds_half_to_even() {
        for x in [
            0.0f32, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.7, 4194303.0,
            -4194303.0, 4194302.5, -4194302.5, 1e-30,
        ] {
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "x = {x}");
            assert_eq!(nearest_int(x), ggml_formula(x), "x = {x}");
        }
    }

    /// Outside it, the result is ggml's formula, not a saturating or clamped rounding.
    #[test]
    fn out_of_domain_is_ggml_formula() {
        // Values derived by hand from the f32 sum's mantissa:
        // inf + 1.5*2^23 = inf: mantissa 0, so 0 - 2^22.
        assert_eq!(nearest_int(f32::INFINITY), -4_194_304);
        assert_eq!(nearest_int(f32::NEG_INFINITY), -4_194_304);
        // 5e6 + 12582912 = 17582912 (exponent 24): mantissa (17582912 - 2^24) / 2 = 402848.
        assert_eq!(nearest_int(5e6), 402_848 - 4_194_304);
        // -5e6 + 12582912 = 7582912 (exponent 22): mantissa (7582912 - 2^22) * 2 = 6777216.
        assert_eq!(nearest_int(-5e6), 6_777_216 - 4_194_304);
        // 4194304 + 12582912 = 2^24: mantissa 0, so the first value past the domain wraps.
        assert_eq!(nearest_int(4_194_304.0), -4_194_304);
        // A quiet NaN keeps only the quiet bit: 2^22 - 2^22.
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_ne!(nearest_int(5e6), 5e6f32.round_ties_even() as i32);

        // A sweep over every exponent past the domain, both signs, and the non-finite values.
        let mut bits = 0x4a80_0000u32; // 4194304.0
        let mut seen = 0;
        while bits < 0x7fff_ffff {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                if x.abs() > 4_194_303.0 || x.is_nan() {
                    assert_eq!(nearest_int(x), ggml_formula(x), "x = {x:e} ({bits:#010x})");
                    seen += 1;
                }
            }
            bits = bits.wrapping_add(40_503);
        }
        assert!(seen > 40_000, "swept {seen} values");
    }
}
