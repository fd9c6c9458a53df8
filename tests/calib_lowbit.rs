//! kiln's importance-weighted fit for TQ1_0, TQ2_0, Q1_0 and Q2_0 (`calib::quantize_row_weighted`;
//! ggml's quantizers for these ignore the importance matrix): never worse than ggml's block on
//! the weighted error, ordinary ggml blocks (ggml's dequantizer gives exactly `level · d` with the
//! stored f16 `d`), the best f16 scale, and ggml's exact bytes whenever no weights are given.

use kiln::calib::{has_weighted_fit, quantize_row_weighted};
use kiln::convert::quantize::quantize_rows;
use kiln::ggml_compat::blocks::{BlockQ1_0, BlockQ2_0, BlockTQ1_0, BlockTQ2_0};
use kiln::ggml_compat::quant;
use kiln::ggml_compat::GgmlType::{self, *};

const LOW_BIT: [GgmlType; 4] = [TQ1_0, TQ2_0, Q1_0, Q2_0];

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    /// Student-t with 2 degrees of freedom: heavy tails, like LLM weight outliers.
    fn heavy(&mut self) -> f32 {
        let z = self.normal();
        let c = self.normal().powi(2) + self.normal().powi(2);
        z / (c / 2.0).max(1e-6).sqrt()
    }
}

/// The levels `t` of `x = t · d`.
fn levels(ty: GgmlType) -> &'static [i32] {
    match ty {
        TQ1_0 | TQ2_0 => &[-1, 0, 1],
        Q1_0 => &[-1, 1],
        Q2_0 => &[-1, 0, 1, 2],
        _ => unreachable!(),
    }
}

/// The stored scale of one block, as ggml's dequantizer reads it.
fn stored_d(ty: GgmlType, block: &[u8]) -> f32 {
    let d = match ty {
        TQ1_0 => bytemuck::pod_read_unaligned::<BlockTQ1_0>(block).d,
        TQ2_0 => bytemuck::pod_read_unaligned::<BlockTQ2_0>(block).d,
        Q1_0 => bytemuck::pod_read_unaligned::<BlockQ1_0>(block).d,
        Q2_0 => bytemuck::pod_read_unaligned::<BlockQ2_0>(block).d,
        _ => unreachable!(),
    };
    d.to_f32()
}

/// `Σ w (x − y)²` per block of `bs`.
fn block_errors(x: &[f32], y: &[f32], w: &[f32], bs: usize) -> Vec<f64> {
    x.chunks(bs)
        .zip(y.chunks(bs))
        .zip(w.chunks(bs))
        .map(|((x, y), w)| {
            x.iter()
                .zip(y)
                .zip(w)
                .map(|((&x, &y), &w)| f64::from(w) * (f64::from(x) - f64::from(y)).powi(2))
                .sum()
        })
        .collect()
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    quant::dequantize(ty, bytes, &mut y).unwrap();
    y
}

fn row_bytes(ty: GgmlType, n: usize) -> usize {
    n / ty.block_size() * ty.type_size()
}

/// On random and heavy-tailed rows with random importance: every block's weighted error is at
/// most ggml's (reference, importance ignored), the total strictly lower; every dequantized value
/// is `level · d` bit for bit with the block's stored f16 `d`, at the level nearest to `x`.
#[test]
fn weighted_fit_beats_ggml_on_every_block() {
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let n = 1024;
    for ty in LOW_BIT {
        assert!(has_weighted_fit(ty));
        let bs = ty.block_size();
        let (mut ours_total, mut ggml_total, mut blocks) = (0f64, 0f64, 0);
        for row in 0..16 {
            let heavy = row % 2 == 1;
            let scale = [0.02f32, 1.0, 30.0, 1e-4][row % 4];
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    scale
                        * if heavy {
                            rng.heavy().clamp(-1e3, 1e3)
                        } else {
                            rng.normal()
                        }
                })
                .collect();
            // importance like an imatrix: positive, spread over orders of magnitude
            let w: Vec<f32> = (0..n).map(|_| (4.0 * rng.normal()).exp()).collect();
            let mut ours = vec![0u8; row_bytes(ty, n)];
            let mut reference = vec![0u8; row_bytes(ty, n)];
            quantize_row_weighted(ty, &x, &mut ours, Some(&w)).unwrap();
            quant::quantize_row(ty, &x, &mut reference, None).unwrap();
            let y = dequant(ty, &ours, n);
            let yr = dequant(ty, &reference, n);
            let eo = block_errors(&x, &y, &w, bs);
            let er = block_errors(&x, &yr, &w, bs);
            for (b, (&o, &r)) in eo.iter().zip(&er).enumerate() {
                assert!(o.is_finite(), "{ty} row {row} block {b}: error {o}");
                assert!(o <= r, "{ty} row {row} block {b}: {o} > ggml's {r}");
            }
            ours_total += eo.iter().sum::<f64>() / f64::from(scale).powi(2);
            ggml_total += er.iter().sum::<f64>() / f64::from(scale).powi(2);
            blocks += eo.len();

            for (b, block) in ours.chunks(ty.type_size()).enumerate() {
                let d = stored_d(ty, block);
                assert!(d.is_finite(), "{ty} row {row} block {b}: d = {d}");
                for j in b * bs..(b + 1) * bs {
                    let vals = levels(ty).iter().map(|&l| l as f32 * d);
                    assert!(
                        vals.clone().any(|v| v.to_bits() == y[j].to_bits()),
                        "{ty} row {row} element {j}: {} is not a level of d = {d}",
                        y[j]
                    );
                    let best = vals.map(|v| (x[j] - v).abs()).fold(f32::INFINITY, f32::min);
                    assert_eq!((x[j] - y[j]).abs(), best, "{ty} element {j}: not nearest");
                }
            }
        }
        eprintln!(
            "{ty}: weighted error {ours_total:.4e} vs ggml {ggml_total:.4e} over {blocks} blocks"
        );
        assert!(
            ours_total < 0.9 * ggml_total,
            "{ty}: {ours_total} vs {ggml_total}"
        );
    }
}

/// With all weights equal (any value) the fit is the unweighted optimum: no finite f16 scale
/// (either sign) with nearest levels does better, checked exhaustively.
#[test]
fn equal_weights_give_the_unweighted_optimum() {
    let mut rng = Rng(42);
    for ty in LOW_BIT {
        let bs = ty.block_size();
        for trial in 0..3 {
            let x: Vec<f32> = (0..bs)
                .map(|_| {
                    if trial == 1 {
                        rng.heavy()
                    } else {
                        rng.normal() * 0.1
                    }
                })
                .collect();
            let w = vec![[1.0f32, 0.37, 1e4][trial]; bs];
            let mut block = vec![0u8; ty.type_size()];
            quantize_row_weighted(ty, &x, &mut block, Some(&w)).unwrap();
            let ones = vec![1f32; bs];
            let got = block_errors(&x, &dequant(ty, &block, bs), &ones, bs)[0];
            let mut best = f64::INFINITY;
            for bits in (0..=0x7bffu16).flat_map(|b| [b, b | 0x8000]) {
                let d = half::f16::from_bits(bits).to_f32();
                let e: f64 = x
                    .iter()
                    .map(|&v| {
                        levels(ty)
                            .iter()
                            .map(|&l| (f64::from(v) - f64::from(l as f32 * d)).powi(2))
                            .fold(f64::INFINITY, f64::min)
                    })
                    .sum();
                best = best.min(e);
            }
            assert!(
                got <= best * (1.0 + 1e-9),
                "{ty} trial {trial}: {got} vs exhaustive {best}"
            );
        }
    }
}

/// A zero block, all-zero weights, and zero / negative / non-finite weights give finite blocks;
/// a block whose weights are all unusable is fitted as if unweighted.
#[test]
fn zero_blocks_and_zero_weights_stay_finite() {
    let mut rng = Rng(7);
    for ty in LOW_BIT {
        let bs = ty.block_size();
        let n = 4 * bs;
        let mut x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        x[..bs].fill(0.0); // block 0: all zero
        let mut w: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        w[bs..2 * bs].fill(0.0); // block 1: no weight at all
        for (j, v) in w[2 * bs..3 * bs].iter_mut().enumerate() {
            // block 2: some weights unusable
            if j % 3 == 0 {
                *v = [0.0, -1.0, f32::NAN, f32::INFINITY][j % 4];
            }
        }
        let mut out = vec![0u8; row_bytes(ty, n)];
        quantize_row_weighted(ty, &x, &mut out, Some(&w)).unwrap();
        let y = dequant(ty, &out, n);
        assert!(y.iter().all(|v| v.is_finite()), "{ty}: non-finite output");
        assert!(y[..bs].iter().all(|&v| v == 0.0), "{ty}: zero block");
        // block 1 is the fit with every weight 1
        let mut unweighted = vec![0u8; ty.type_size()];
        let xb = &x[bs..2 * bs];
        quantize_row_weighted(ty, xb, &mut unweighted, Some(&vec![1.0; bs])).unwrap();
        let ts = ty.type_size();
        assert_eq!(&out[ts..2 * ts], &unweighted[..], "{ty}: zero-weight block");
        // and it is a real fit: not worse than ggml's unweighted on that block
        let mut reference = vec![0u8; ts];
        quant::quantize_row(ty, xb, &mut reference, None).unwrap();
        let ones = vec![1f32; bs];
        let e = block_errors(xb, &y[bs..2 * bs], &ones, bs)[0];
        let er = block_errors(xb, &dequant(ty, &reference, bs), &ones, bs)[0];
        assert!(e <= er, "{ty}: {e} vs {er}");
    }
}

/// Without weights every type is ggml's reference quantizer byte for byte (rtn stays ggml's), and
/// with weights the types whose ggml quantizer uses them are ggml's weighted bytes; only the four
/// low-bit types differ, and `quantize_rows` routes an importance matrix through the fit.
#[test]
fn ggml_bytes_everywhere_else() {
    let mut rng = Rng(99);
    let n = 512;
    let x: Vec<f32> = (0..n).map(|_| rng.heavy()).collect();
    let w: Vec<f32> = (0..n).map(|_| rng.unit() + 0.01).collect();
    for ty in [
        Q4_0, Q4_1, Q5_0, Q8_0, Q2_K, Q3_K, Q4_K, Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, Q1_0, Q2_0,
    ] {
        let rb = row_bytes(ty, n);
        let (mut a, mut b) = (vec![0u8; rb], vec![0u8; rb]);
        quantize_row_weighted(ty, &x, &mut a, None).unwrap();
        quant::quantize_row(ty, &x, &mut b, None).unwrap();
        assert_eq!(a, b, "{ty} without weights");
        quantize_row_weighted(ty, &x, &mut a, Some(&w)).unwrap();
        quant::quantize_row(ty, &x, &mut b, Some(&w)).unwrap();
        assert_eq!(a == b, !has_weighted_fit(ty), "{ty} with weights");
    }
    let rows = 3;
    let xs: Vec<f32> = (0..rows * n).map(|_| rng.normal()).collect();
    let got = quantize_rows(TQ2_0, &xs, n, rows, Some(&w), 2).unwrap();
    let rb = row_bytes(TQ2_0, n);
    for r in 0..rows {
        let mut want = vec![0u8; rb];
        quantize_row_weighted(TQ2_0, &xs[r * n..(r + 1) * n], &mut want, Some(&w)).unwrap();
        assert_eq!(&got[r * rb..(r + 1) * rb], &want[..], "row {r}");
    }
    let plain = quantize_rows(TQ2_0, &xs, n, rows, None, 2).unwrap();
    let mut want = vec![0u8; rows * rb];
    for r in 0..rows {
        let dst = &mut want[r * rb..(r + 1) * rb];
        quant::quantize_row(TQ2_0, &xs[r * n..(r + 1) * n], dst, None).unwrap();
    }
    assert_eq!(plain, want, "quantize_rows without an imatrix is ggml's");
}
