//! GPTQ into ggml blocks (issue #7): output error against round-to-nearest and imatrix
//! quantization on correlated synthetic activations, bit-exact encodings, dead columns, the
//! damping retry, and the Hessian accumulation.
//!
//! Timings (release): `cargo test --release --test calib_gptq timing -- --ignored --nocapture`.

use kiln::calib::gptq::{self, GptqError, GptqOptions, Prepared};
use kiln::calib::hessian::Hessian;
use kiln::calib::quantize_row_weighted;
use kiln::ggml_compat::quant;
use kiln::ggml_compat::GgmlType;
use std::time::Instant;

const TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, TQ1_0, TQ2_0, Q1_0,
        Q2_0,
    ]
};

/// splitmix64 with Box–Muller normals: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// `k × n` activations `X = Z·A + E`: `Z` (`k × n/4`) normal with decaying component scales,
/// `A` a random mixing to `n` channels, `E` small independent noise, then channel scales
/// spread over 10× with every 97th channel an outlier (×20).
fn activations(rng: &mut Rng, k: usize, n: usize) -> Vec<f32> {
    let m = (n / 4).max(1);
    let a: Vec<f32> = (0..m * n)
        .map(|_| rng.normal() / (m as f32).sqrt())
        .collect();
    let scales: Vec<f32> = (0..m).map(|c| (-(c as f32) / 24.0).exp() + 0.05).collect();
    let chan: Vec<f32> = (0..n)
        .map(|c| {
            let s = 0.3 + 3.0 * rng.uniform() as f32;
            if c % 97 == 13 {
                20.0 * s
            } else {
                s
            }
        })
        .collect();
    let mut x = vec![0f32; k * n];
    let mut z = vec![0f32; m];
    for row in x.chunks_exact_mut(n) {
        for (c, zc) in z.iter_mut().enumerate() {
            *zc = rng.normal() * scales[c];
        }
        for (c, &zc) in z.iter().enumerate() {
            for (xc, &ac) in row.iter_mut().zip(&a[c * n..(c + 1) * n]) {
                *xc += zc * ac;
            }
        }
        for (xc, &s) in row.iter_mut().zip(&chan) {
            *xc = (*xc + 0.2 * rng.normal()) * s;
        }
    }
    x
}

fn weights(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|_| rng.normal() * 0.02).collect()
}

fn hessian_of(x: &[f32], n: usize) -> Hessian {
    let mut h = Hessian::new(n);
    h.add(x);
    h
}

/// Round-trips `w` through the quantizer `--method rtn` / `--method imatrix` use (ggml's, and
/// with weights kiln's fit for TQ1_0/TQ2_0/Q1_0/Q2_0) and ggml's dequantizer.
fn rtn(w: &[f32], cols: usize, ty: GgmlType, imatrix: Option<&[f32]>) -> Vec<f32> {
    let row_bytes = cols / ty.block_size() * ty.type_size();
    let mut out = vec![0f32; w.len()];
    let mut buf = vec![0u8; row_bytes];
    for (src, dst) in w.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        quantize_row_weighted(ty, src, &mut buf, imatrix).unwrap();
        quant::dequantize(ty, &buf, dst).unwrap();
    }
    out
}

fn dequant(bytes: &[u8], rows: usize, cols: usize, ty: GgmlType) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    quant::dequantize(ty, bytes, &mut out).unwrap();
    out
}

/// `diag(H) / rows`: ggml's imatrix value per column, as GPTQ derives it.
fn imatrix_of(h: &Hessian) -> Vec<f32> {
    h.diag()
        .iter()
        .map(|&d| (d / h.rows as f64) as f32)
        .collect()
}

/// Largest allowed `gptq / min(rtn, imatrix)` output-error ratio, for every type. Measured with this
/// data (seed 7, 16×512, 1024 samples): 0.30–0.41 for the 4- to 8-bit and K types, 0.41 for
/// TQ1_0/TQ2_0, 0.40 for Q1_0, 0.37 for Q2_0 (the low-bit four against kiln's weighted fit,
/// which cuts the imatrix error 2–19× below ggml's: with ggml's fit, TQ*'s ratio was 0.43 and
/// Q1_0's 0.55). A sweep without working error feedback lands near 1.
const BOUND: f64 = 0.55;

#[test]
fn gptq_beats_rtn_and_imatrix_on_correlated_activations() {
    let (rows, cols) = (16, 512);
    let mut rng = Rng(7);
    let x = activations(&mut rng, 2 * cols, cols);
    let h = hessian_of(&x, cols);
    let w = weights(&mut rng, rows, cols);
    let imatrix = imatrix_of(&h);
    let opts = GptqOptions::default();
    let prepared = Prepared::new(&h, &opts).unwrap();
    let mut failures = Vec::new();
    for ty in TYPES {
        let e_rtn = gptq::output_error(&w, &rtn(&w, cols, ty, None), cols, &h);
        let e_imx = gptq::output_error(&w, &rtn(&w, cols, ty, Some(&imatrix)), cols, &h);
        let res = gptq::quantize_prepared(&w, rows, cols, &prepared, ty, &opts).unwrap();
        assert_eq!(
            res.bytes.len(),
            rows * cols / ty.block_size() * ty.type_size()
        );
        let e_gptq = gptq::output_error(&w, &dequant(&res.bytes, rows, cols, ty), cols, &h);
        let ratio = e_gptq / e_rtn.min(e_imx);
        println!(
            "{:7} rtn {e_rtn:10.4e} imatrix {e_imx:10.4e} gptq {e_gptq:10.4e} \
             gptq/min {ratio:.3} damp {}",
            ty.name(),
            res.damp_used
        );
        if ratio.is_nan() || ratio > BOUND {
            failures.push(format!("{}: ratio {ratio:.3} > {}", ty.name(), BOUND));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Every `quantize` call checks that ggml's dequantization of its bytes equals, bit for bit,
/// the values it fed back (else `EncodingMismatch`); the codec's unit tests check the same with
/// random codes in every bit position. Here: finite output, and the same bytes on 1 thread.
#[test]
fn bytes_dequantize_to_finite_values_near_weights() {
    let (rows, cols) = (8, 512);
    let mut rng = Rng(11);
    let x = activations(&mut rng, 2 * cols, cols);
    let h = hessian_of(&x, cols);
    let w = weights(&mut rng, rows, cols);
    let prepared = Prepared::new(&h, &GptqOptions::default()).unwrap();
    for ty in TYPES {
        let res = gptq::quantize_prepared(&w, rows, cols, &prepared, ty, &GptqOptions::default())
            .unwrap();
        let back = dequant(&res.bytes, rows, cols, ty);
        assert!(back.iter().all(|v| v.is_finite()), "{}", ty.name());
        // Same bytes whatever the thread count and lazy width (rows are independent, and the
        // lazy width only changes when updates are applied, not their values, up to f32
        // rounding: so compare thread counts only).
        let one = GptqOptions {
            threads: 1,
            ..GptqOptions::default()
        };
        let res1 = gptq::quantize_prepared(&w, rows, cols, &prepared, ty, &one).unwrap();
        assert_eq!(
            res.bytes,
            res1.bytes,
            "{}: thread count changed the bytes",
            ty.name()
        );
    }
}

#[test]
fn dead_columns_are_zeroed_and_isolated() {
    let (rows, cols) = (8, 256);
    let mut rng = Rng(3);
    let mut x = activations(&mut rng, 2 * cols, cols);
    let dead = [5usize, 40, 41, 200];
    for row in x.chunks_exact_mut(cols) {
        for &d in &dead {
            row[d] = 0.0;
        }
    }
    let h = hessian_of(&x, cols);
    let w = weights(&mut rng, rows, cols);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let res = gptq::quantize(&w, rows, cols, &h, ty, &GptqOptions::default()).unwrap();
        assert_eq!(res.dead_columns, dead.len());
        let back = dequant(&res.bytes, rows, cols, ty);
        if matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q6_K) {
            // Symmetric grids hold 0 exactly: a dead column's weight is zeroed and gets no
            // error fed into it, so it quantizes to 0.
            for r in 0..rows {
                for &d in &dead {
                    assert_eq!(back[r * cols + d], 0.0, "{} row {r} col {d}", ty.name());
                }
            }
        }
        let e_rtn = gptq::output_error(&w, &rtn(&w, cols, ty, None), cols, &h);
        let e_gptq = gptq::output_error(&w, &back, cols, &h);
        assert!(e_gptq < e_rtn, "{}: {e_gptq} vs rtn {e_rtn}", ty.name());
    }
}

/// A symmetric, indefinite "Hessian": 2×2 blocks [[1, c], [c, 1]] (eigenvalues 1 ± c).
fn indefinite(n: usize, c: f64) -> Hessian {
    let mut h = Hessian::new(n);
    for p in (0..n).step_by(2) {
        h.sum[p * n + p] = 1.0;
        h.sum[(p + 1) * n + p + 1] = 1.0;
        h.sum[p * n + p + 1] = c;
        h.sum[(p + 1) * n + p] = c;
    }
    h.rows = 1;
    h
}

#[test]
fn cholesky_failure_raises_damping() {
    let (rows, cols) = (4, 64);
    let mut rng = Rng(5);
    let w = weights(&mut rng, rows, cols);
    // Smallest eigenvalue -0.05: damping 0.01 fails, 0.1 (λ = 0.1) succeeds.
    let h = indefinite(cols, 1.05);
    let res = gptq::quantize(&w, rows, cols, &h, GgmlType::Q8_0, &GptqOptions::default()).unwrap();
    assert!(
        (res.damp_used - 0.1).abs() < 1e-12,
        "damp used {}",
        res.damp_used
    );
    // Smallest eigenvalue -999: no damping up to 100 × mean diag fixes it.
    let h = indefinite(cols, 1000.0);
    let err = gptq::quantize(&w, rows, cols, &h, GgmlType::Q8_0, &GptqOptions::default());
    match err {
        Err(GptqError::NotPositiveDefinite { damp }) => assert!((damp - 100.0).abs() < 1e-9),
        other => panic!("expected NotPositiveDefinite, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_errors() {
    let mut rng = Rng(9);
    let w = weights(&mut rng, 2, 64);
    let x = activations(&mut rng, 128, 64);
    let h = hessian_of(&x, 64);
    let opts = GptqOptions::default();
    assert!(matches!(
        gptq::quantize(&w, 2, 64, &h, GgmlType::IQ4_XS, &opts),
        Err(GptqError::Unsupported(GgmlType::IQ4_XS))
    ));
    // 64 columns are not a whole Q4_K super-block.
    assert!(matches!(
        gptq::quantize(&w, 2, 64, &h, GgmlType::Q4_K, &opts),
        Err(GptqError::Shape { .. })
    ));
    assert!(matches!(
        gptq::quantize(&w[..100], 2, 64, &h, GgmlType::Q4_0, &opts),
        Err(GptqError::Shape { .. })
    ));
    assert!(matches!(
        gptq::quantize(&w, 2, 64, &Hessian::new(64), GgmlType::Q4_0, &opts),
        Err(GptqError::NoCalibration)
    ));
    let mut wn = w.clone();
    wn[77] = f32::NAN;
    assert!(matches!(
        gptq::quantize(&wn, 2, 64, &h, GgmlType::Q4_0, &opts),
        Err(GptqError::NonFinite { index: 77, .. })
    ));
}

#[test]
fn hessian_add_matches_naive_f64() {
    let (k, n) = (700, 100); // three tiles, the last partial
    let mut rng = Rng(1);
    let mut x = activations(&mut rng, k, n);
    x[3 * n + 7] = 250.0; // an outlier
    let mut h = Hessian::new(n);
    h.add(&x[..300 * n]);
    h.add(&x[300 * n..]);
    assert_eq!(h.rows, k as u64);
    let mut naive = vec![0f64; n * n];
    for row in x.chunks_exact(n) {
        for i in 0..n {
            for j in 0..n {
                naive[i * n + j] += f64::from(row[i]) * f64::from(row[j]);
            }
        }
    }
    let mut worst = 0f64;
    for i in 0..n {
        for j in 0..n {
            let scale = (naive[i * n + i] * naive[j * n + j]).sqrt();
            let rel = (h.sum[i * n + j] - naive[i * n + j]).abs() / scale;
            worst = worst.max(rel);
            assert_eq!(
                h.sum[i * n + j],
                h.sum[j * n + i],
                "not symmetric at {i},{j}"
            );
        }
    }
    println!("worst |ΔH_ij| / sqrt(H_ii H_jj) = {worst:.3e}");
    assert!(worst < 1e-6, "worst relative error {worst:e}");
}

/// Release timings for SmolLM2's shapes; run with `--release -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    let mut rng = Rng(2);
    for n in [576, 1536] {
        let x = activations(&mut rng, 512, n);
        let t = Instant::now();
        let h = hessian_of(&x, n);
        let s = t.elapsed().as_secs_f64();
        println!("Hessian::add 512×{n}: {s:.3} s ({:.0} rows/s)", 512.0 / s);
        let x2 = activations(&mut rng, 2 * n, n);
        let mut h2 = h.clone();
        h2.add(&x2);
        let t = Instant::now();
        let p = Prepared::new(&h2, &GptqOptions::default()).unwrap();
        println!(
            "Prepared::new (damped inverse factor) n = {n}: {:.3} s",
            t.elapsed().as_secs_f64()
        );
        for rows in [576, 1536] {
            if n == 1536 && rows == 1536 {
                continue;
            }
            let w = weights(&mut rng, rows, n);
            // 576 is not a whole number of 256-element super-blocks (llama.cpp falls back to a
            // 32-block type for such tensors), so K-quants only where the columns allow.
            let types = [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K];
            for ty in types.into_iter().filter(|t| n % t.block_size() == 0) {
                let t = Instant::now();
                let res = gptq::quantize(&w, rows, n, &h2, ty, &GptqOptions::default()).unwrap();
                let total = t.elapsed().as_secs_f64();
                let t = Instant::now();
                gptq::quantize_prepared(&w, rows, n, &p, ty, &GptqOptions::default()).unwrap();
                println!(
                    "GPTQ {rows}×{n} {}: {total:.3} s, of which the sweep {:.3} s (damp {})",
                    ty.name(),
                    t.elapsed().as_secs_f64(),
                    res.damp_used
                );
            }
        }
    }
}

/// The first block of each row is fitted before any error reaches it, so its parameters must
/// be exactly those of the imatrix-weighted quantizer on the original weights (with
/// `diag(H) / rows` as the imatrix): the scale/min bytes of that block equal ggml's, or kiln's
/// weighted fit's for the four types whose ggml quantizer ignores the weights.
#[test]
fn first_block_parameters_are_ggmls_imatrix_fit() {
    let (rows, cols) = (6, 256);
    let mut rng = Rng(21);
    let x = activations(&mut rng, 2 * cols, cols);
    let h = hessian_of(&x, cols);
    let w = weights(&mut rng, rows, cols);
    let imatrix = imatrix_of(&h);
    // (type, bytes of the block's parameters per ggml-common.h)
    let params: [(GgmlType, std::ops::Range<usize>); 10] = [
        (GgmlType::Q4_0, 0..2),
        (GgmlType::Q4_1, 0..4),
        (GgmlType::IQ4_NL, 0..2),
        (GgmlType::Q3_K, 96..110),
        (GgmlType::Q4_K, 0..16),
        (GgmlType::Q6_K, 192..210),
        (GgmlType::TQ1_0, 52..54),
        (GgmlType::TQ2_0, 64..66),
        (GgmlType::Q1_0, 0..2),
        (GgmlType::Q2_0, 0..2),
    ];
    for (ty, range) in params {
        let bs = ty.block_size();
        let res = gptq::quantize(&w, rows, cols, &h, ty, &GptqOptions::default()).unwrap();
        let row_bytes = cols / bs * ty.type_size();
        let mut ggml = vec![0u8; ty.type_size()];
        for r in 0..rows {
            let src = &w[r * cols..r * cols + bs];
            quantize_row_weighted(ty, src, &mut ggml, Some(&imatrix[..bs])).unwrap();
            let ours = &res.bytes[r * row_bytes..r * row_bytes + ty.type_size()];
            assert_eq!(
                ours[range.clone()],
                ggml[range.clone()],
                "{} row {r} bytes {range:?}",
                ty.name()
            );
        }
    }
}
