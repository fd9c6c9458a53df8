//! Round-trip properties of the K-quants (Q2_K..Q6_K, Q8_K) on random rows, as a second check
//! next to the golden bytes:
//! - the quantizer picks, for every value, the nearest value its block can represent (the grid
//!   `d_j * l - m_j` set by the stored scales; found by dequantizing the block with every level
//!   forced to `l`), with or without an importance matrix;
//! - the reference quantizer's error is within one level step of the super-block's range, plus the
//!   absolute resolution of f16 scales (`2^-24`, which tiny rows run into);
//! - Q8_K re-quantizes its own output to the same quants (the largest value lands on ±127
//!   exactly). The other types do not: their scale search re-fits dequantized rows (measured on
//!   400 random rows: 20-60% come back byte-identical, by type), so that is not asserted.

use bytemuck::Pod;
use ggml_compat::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use ggml_compat::quant::{dequantize, quantize_row};
use ggml_compat::{GgmlType, QK_K};
use proptest::prelude::*;

/// Uniform f32s in `[lo, hi)` from integers: proptest's own f32 range sampler can trip a debug
/// assertion on some seeds (proptest-rs/proptest float_samplers "invalid range").
fn uniform(lo: f32, hi: f32) -> impl Strategy<Value = f32> + Clone {
    (0u32..1 << 24).prop_map(move |i| lo + (hi - lo) * (i as f32 / (1u32 << 24) as f32))
}

const TYPES: [GgmlType; 6] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

fn quantize(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut out, imatrix).unwrap();
    out
}

fn dequant(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / ty.type_size() * QK_K];
    dequantize(ty, bytes, &mut out).unwrap();
    out
}

/// Rewrites every block in `bytes` (unaligned) through `f`.
fn edit_blocks<B: Pod>(bytes: &mut [u8], f: impl Fn(&mut B)) {
    for chunk in bytes.chunks_exact_mut(std::mem::size_of::<B>()) {
        let mut b: B = bytemuck::pod_read_unaligned(chunk);
        f(&mut b);
        chunk.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

/// The stored levels of a type, and a copy of `bytes` with every value's level set to `l`
/// (the same in every position, so no knowledge of the element order is needed).
fn levels(ty: GgmlType) -> std::ops::RangeInclusive<i32> {
    match ty {
        GgmlType::Q2_K => 0..=3,
        GgmlType::Q3_K => 0..=7,
        GgmlType::Q4_K => 0..=15,
        GgmlType::Q5_K => 0..=31,
        GgmlType::Q6_K => 0..=63,
        GgmlType::Q8_K => -128..=127,
        _ => unreachable!(),
    }
}

fn with_level(ty: GgmlType, bytes: &[u8], l: i32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let (lo, hi) = (l as u8 & 0xF, (l >> 4) as u8);
    match ty {
        GgmlType::Q2_K => edit_blocks(&mut b, |y: &mut BlockQ2K| y.qs = [l as u8 * 0x55; 64]),
        GgmlType::Q3_K => edit_blocks(&mut b, |y: &mut BlockQ3K| {
            y.qs = [(l as u8 & 3) * 0x55; 64];
            y.hmask = [if l >= 4 { 0xFF } else { 0 }; 32];
        }),
        GgmlType::Q4_K => edit_blocks(&mut b, |y: &mut BlockQ4K| y.qs = [lo * 0x11; 128]),
        GgmlType::Q5_K => edit_blocks(&mut b, |y: &mut BlockQ5K| {
            y.qs = [lo * 0x11; 128];
            y.qh = [if hi != 0 { 0xFF } else { 0 }; 32];
        }),
        GgmlType::Q6_K => edit_blocks(&mut b, |y: &mut BlockQ6K| {
            y.ql = [lo * 0x11; 128];
            y.qh = [hi * 0x55; 64];
        }),
        GgmlType::Q8_K => edit_blocks(&mut b, |y: &mut BlockQ8K| y.qs = [l as i8; QK_K]),
        _ => unreachable!(),
    }
    b
}

/// Every value of `x` dequantizes to a point of its block's grid, and to the nearest one.
fn assert_nearest_grid_point(ty: GgmlType, x: &[f32], bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = dequant(ty, bytes);
    let grids: Vec<Vec<f32>> = levels(ty)
        .map(|l| dequant(ty, &with_level(ty, bytes, l)))
        .collect();
    for (i, (&v, &g)) in x.iter().zip(&got).enumerate() {
        let on_grid = grids.iter().any(|grid| grid[i].to_bits() == g.to_bits());
        prop_assert!(
            on_grid,
            "{ty}: value {i} dequantizes to {g}, not a grid point"
        );
        let best = grids
            .iter()
            .map(|grid| (v - grid[i]).abs())
            .fold(f32::INFINITY, f32::min);
        let span = grids.iter().fold(0f32, |m, grid| m.max(grid[i].abs()));
        let tol = 8.0 * f32::EPSILON * (v.abs() + span);
        prop_assert!(
            (v - g).abs() <= best + tol,
            "{ty}: value {i} = {v} became {g} (error {}), a grid point is {best} away",
            (v - g).abs()
        );
    }
    Ok(())
}

/// Reference quantizer error bound per super-block: one level step of the full range
/// `2 * amax / (levels - 1)`, plus what f16 scales cannot resolve (absolute rounding `2^-25` on
/// `d` and `dmin`, times the largest sub-block scale × level and sub-block min). Q8_K stores
/// an f32 scale: half a step of `amax / 127`, and nothing for rows so small that `-127 / max`
/// overflows.
fn error_bound(ty: GgmlType, amax: f32) -> f32 {
    let f16_floor = |reach: f32| reach * 2f32.powi(-25);
    match ty {
        GgmlType::Q2_K => 2.0 * amax / 3.0 + f16_floor(15.0 * 3.0 + 15.0),
        GgmlType::Q3_K => 2.0 * amax / 7.0 + f16_floor(32.0 * 4.0),
        GgmlType::Q4_K => 2.0 * amax / 15.0 + f16_floor(63.0 * 15.0 + 63.0),
        GgmlType::Q5_K => 2.0 * amax / 31.0 + f16_floor(63.0 * 31.0 + 63.0),
        GgmlType::Q6_K => 2.0 * amax / 63.0 + f16_floor(128.0 * 32.0),
        // Half a step, plus the f32 rounding of the three operations between x and its value:
        // `iscale * x` (up to 127 half-ulps in q units, which can push an exact tie the wrong
        // way), `1 / iscale` and `d * q` (a half-ulp each): 3 * 2^-24 * amax in all.
        GgmlType::Q8_K => amax / 254.0 + 3.0 * amax * 2f32.powi(-24) + 127.0 / f32::MAX,
        _ => unreachable!(),
    }
}

fn assert_error_bound(ty: GgmlType, x: &[f32], bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = dequant(ty, bytes);
    for (sb, (xs, gs)) in x.chunks(QK_K).zip(got.chunks(QK_K)).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let bound = error_bound(ty, amax);
        for (i, (&v, &g)) in xs.iter().zip(gs).enumerate() {
            prop_assert!(
                (v - g).abs() <= bound,
                "{ty}: super-block {sb} value {i} = {v} became {g}, bound {bound} (amax {amax})"
            );
        }
    }
    Ok(())
}

/// Rows of one or two super-blocks: noise at a random magnitude (1e-9..1e4), optionally with
/// outliers 30x larger; all zero; constant; tiny (below ggml's 1e-15 group threshold and in the
/// f16-subnormal range); mostly zero.
fn row() -> impl Strategy<Value = Vec<f32>> {
    let n = prop_oneof![Just(QK_K), Just(2 * QK_K)];
    n.prop_flat_map(|n| {
        let noise = prop::collection::vec(uniform(-1.0, 1.0), n);
        prop_oneof![
            3 => (noise.clone(), uniform(-9.0, 4.0)).prop_map(|(v, e)| {
                let s = 10f32.powf(e);
                v.into_iter().map(|x| x * s).collect()
            }),
            2 => (noise.clone(), uniform(-6.0, 2.0), prop::collection::vec(0..n, 1..6)).prop_map(
                |(mut v, e, at)| {
                    let s = 10f32.powf(e);
                    v.iter_mut().for_each(|x| *x *= s);
                    for i in at {
                        v[i] = 30.0 * s * v[i].signum();
                    }
                    v
                }
            ),
            1 => Just(vec![0.0; n]),
            1 => (uniform(-10.0, 10.0)).prop_map(move |c| vec![c; n]),
            1 => (noise.clone(), prop_oneof![uniform(-30.0, -15.0), uniform(-9.0, -6.0)]).prop_map(|(v, e)| {
                let s = 10f32.powf(e);
                v.into_iter().map(|x| x * s).collect()
            }),
            1 => (noise, prop::collection::vec(any::<bool>(), n)).prop_map(|(v, keep)| {
                v.into_iter().zip(keep).map(|(x, k)| if k && x > 0.8 { x } else { 0.0 }).collect()
            }),
        ]
    })
}

/// An importance matrix for a row: non-negative (mean squared activations), some columns zero.
fn imatrix(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(prop_oneof![9 => uniform(0.001, 10.0), 1 => Just(0.0f32)], n)
}

fn row_with_imatrix() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    row().prop_flat_map(|x| {
        let n = x.len();
        (Just(x), imatrix(n))
    })
}

proptest! {
    #[test]
    fn reference_quantization_picks_nearest_grid_point(x in row()) {
        for ty in TYPES {
            let q = quantize(ty, &x, None);
            assert_nearest_grid_point(ty, &x, &q)?;
        }
    }

    #[test]
    fn imatrix_quantization_picks_nearest_grid_point((x, w) in row_with_imatrix()) {
        for ty in TYPES {
            let q = quantize(ty, &x, Some(&w));
            assert_nearest_grid_point(ty, &x, &q)?;
        }
    }

    #[test]
    fn reference_error_within_one_step(x in row()) {
        for ty in TYPES {
            let q = quantize(ty, &x, None);
            assert_error_bound(ty, &x, &q)?;
        }
    }

    /// Q8_K's largest value maps to ±127 exactly, so re-quantizing its output gives the same
    /// quants and block sums, and `d = 1 / (-127 / max)` moves by at most one ulp. The sign is
    /// not canonical: when both +127 and -127 occur, the first of them now sets the sign of `d`,
    /// which may flip `d` and every quant together (same values).
    #[test]
    fn q8_k_requantizes_to_same_quants(x in row()) {
        let ty = GgmlType::Q8_K;
        let q1 = quantize(ty, &x, None);
        let q2 = quantize(ty, &dequant(ty, &q1), None);
        for (b1, b2) in q1.chunks_exact(ty.type_size()).zip(q2.chunks_exact(ty.type_size())) {
            let b1: BlockQ8K = bytemuck::pod_read_unaligned(b1);
            let b2: BlockQ8K = bytemuck::pod_read_unaligned(b2);
            let flip = b1.d != 0.0 && b1.d.is_sign_negative() != b2.d.is_sign_negative();
            if flip {
                prop_assert!(b1.qs.contains(&127) && b1.qs.contains(&-127), "sign flipped");
            }
            let sign = if flip { -1 } else { 1 };
            prop_assert_eq!(b1.qs.map(|q| sign * q), b2.qs);
            prop_assert_eq!(b1.bsums.map(|s| sign as i16 * s), b2.bsums);
            let ulps = (i64::from(b1.d.abs().to_bits()) - i64::from(b2.d.abs().to_bits())).abs();
            prop_assert!(ulps <= 1, "d {} became {}", b1.d, b2.d);
        }
    }
}

/// Block sums are the sums of each 16 quants, and the zero and constant rows behave as ggml's
/// code says: zero rows give zero blocks, a constant row one level everywhere.
#[test]
fn q8_k_bsums_and_special_rows() {
    let ty = GgmlType::Q8_K;
    let x: Vec<f32> = (0..QK_K)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let b: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(ty, &x, None));
    for (j, s) in b.bsums.iter().enumerate() {
        let want: i32 = b.qs[16 * j..16 * (j + 1)]
            .iter()
            .map(|&q| i32::from(q))
            .sum();
        assert_eq!(i32::from(*s), want, "bsums[{j}]");
    }
    assert!(b.qs.iter().all(|&q| q > -128), "Q8_K never uses -128");

    let zero: BlockQ8K = bytemuck::pod_read_unaligned(&quantize(ty, &[0.0; QK_K], None));
    assert_eq!(zero.d, 0.0);
    assert!(zero.qs.iter().all(|&q| q == 0) && zero.bsums.iter().all(|&s| s == 0));

    for ty in TYPES {
        let q = quantize(ty, &[0.0; QK_K], None);
        assert!(dequant(ty, &q).iter().all(|&v| v == 0.0), "{ty}: zero row");
        let q = quantize(ty, &[0.0; QK_K], Some(&[1.0; QK_K]));
        assert!(
            dequant(ty, &q).iter().all(|&v| v == 0.0),
            "{ty}: zero row, imatrix"
        );
    }
}

proptest! {
    /// Any f32 bit pattern (NaN, ±inf, subnormals, huge values) quantizes without panicking, with
    /// or without an imatrix; any bytes dequantize without panicking.
    #[test]
    fn arbitrary_floats_and_bytes_do_not_panic(
        x in prop::collection::vec(
            prop_oneof![
                4 => uniform(-1.0, 1.0),
                2 => any::<u32>().prop_map(f32::from_bits),
                1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 1e-45]),
            ],
            QK_K,
        ),
        w in imatrix(QK_K),
        bytes in prop::collection::vec(any::<u8>(), 292),
    ) {
        for ty in TYPES {
            quantize(ty, &x, None);
            quantize(ty, &x, Some(&w));
            dequant(ty, &bytes[..ty.type_size()]);
        }
    }
}
