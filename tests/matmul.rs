//! `kiln::kernels::matmul` against references: a naive f64 product of dequantized weights and
//! the activations as the kernels see them, and ggml's own `vec_dot.f32` golden results.
//!
//! The quantized cases need `ggml_compat::quant::{quantize_row, dequantize}` (ported on other
//! branches); the F32 / F16 / BF16 cases build their bytes with `half` and run on their own.

mod common;

use common::{floats, golden_root, read, values};
use ggml_compat::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use ggml_compat::quant::{dequantize, quantize_row};
use ggml_compat::GgmlType;
use half::{bf16, f16};
use kiln::kernels::{
    kernels, matmul, matmul_with, quantize_activations, supported_types, MatmulError,
    MatmulScratch, ScopedThreads, WeightMatrix,
};

/// The activations exactly as the kernels see them: converted to `vdt` and back to f32.
fn seen_activations(vdt: GgmlType, x: &[f32], cols: usize) -> Vec<f32> {
    let row_bytes = vdt.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; x.len() / cols * row_bytes];
    quantize_activations(vdt, x, cols, &mut bytes).unwrap();
    fn scaled<B: bytemuck::Pod>(bytes: &[u8], f: impl Fn(&B) -> Vec<f32>) -> Vec<f32> {
        let blocks: Vec<B> = bytes
            .chunks_exact(std::mem::size_of::<B>())
            .map(bytemuck::pod_read_unaligned)
            .collect();
        blocks.iter().flat_map(f).collect()
    }
    match vdt {
        GgmlType::F32 => x.to_vec(),
        GgmlType::F16 => scaled(&bytes, |h: &f16| vec![h.to_f32()]),
        GgmlType::BF16 => scaled(&bytes, |h: &bf16| vec![h.to_f32()]),
        GgmlType::Q8_0 => scaled(&bytes, |b: &BlockQ8_0| {
            b.qs.iter().map(|&q| b.d.to_f32() * q as f32).collect()
        }),
        GgmlType::Q8_1 => scaled(&bytes, |b: &BlockQ8_1| {
            b.qs.iter().map(|&q| b.d.to_f32() * q as f32).collect()
        }),
        GgmlType::Q8_K => scaled(&bytes, |b: &BlockQ8K| {
            b.qs.iter().map(|&q| b.d * q as f32).collect()
        }),
        other => panic!("no test dequantizer for activation type {other}"),
    }
}

/// Checks `out` ([n_tokens × rows]) against `sum_k w[r][k] * a[t][k]` computed in f64.
fn check_against_reference(
    ty: GgmlType,
    w: &[f32],
    a: &[f32],
    out: &[f32],
    rows: usize,
    cols: usize,
) {
    let exact = |t: usize, r: usize| -> f64 {
        let (wr, at) = (&w[r * cols..(r + 1) * cols], &a[t * cols..(t + 1) * cols]);
        wr.iter().zip(at).map(|(w, a)| *w as f64 * *a as f64).sum()
    };
    check_close(ty, w, a, out, rows, cols, "reference", &exact);
}

/// Checks `out` ([n_tokens × rows]) against `want(t, r)`.
///
/// Tolerance: 1e-5 relative, with a floor of 4 ulps of `sum_k max|w in block| * |a_k|` for
/// results near 0 — the same bound as `kernels_golden.rs` (see its `Golden::agrees`): the
/// kernels' integer sums are exact, only the rounding of per-block float terms differs from
/// the exact sum, and no term exceeds its block's largest weight times its activations.
#[allow(clippy::too_many_arguments)]
fn check_close(
    ty: GgmlType,
    w: &[f32],
    a: &[f32],
    out: &[f32],
    rows: usize,
    cols: usize,
    what: &str,
    want: &dyn Fn(usize, usize) -> f64,
) {
    let n_tokens = a.len() / cols;
    let block = ty.block_size();
    let mut failures = Vec::new();
    for t in 0..n_tokens {
        let at = &a[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let magnitude: f64 = wr
                .chunks(block)
                .zip(at.chunks(block))
                .map(|(wb, ab)| {
                    let wmax = wb.iter().fold(0f64, |m, w| m.max(w.abs() as f64));
                    wmax * ab.iter().map(|a| a.abs() as f64).sum::<f64>()
                })
                .sum();
            let want = want(t, r);
            let tol = (1e-5 * want.abs()).max(4.0 * f32::EPSILON as f64 * magnitude);
            let got = out[t * rows + r];
            if (got as f64 - want).abs() > tol {
                failures.push(format!("[t {t}][r {r}] got {got:e}, {what} {want:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{ty}: {} of {} outputs off:\n{}",
        failures.len(),
        rows * n_tokens,
        failures[..failures.len().min(10)].join("\n")
    );
}

/// Runs the matmul on 1, 2 and 3 threads, checks the results are bit-identical, returns them.
fn run(w: &WeightMatrix, x: &[f32], n_tokens: usize) -> Vec<f32> {
    let mut first = vec![f32::NAN; n_tokens * w.rows()];
    matmul(w, x, n_tokens, &mut first, 1).unwrap();
    for threads in [2, 3] {
        let mut out = vec![f32::NAN; n_tokens * w.rows()];
        matmul(w, x, n_tokens, &mut out, threads).unwrap();
        let same = first
            .iter()
            .zip(&out)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{}: {threads} threads differ from 1", w.ty());
    }
    first
}

/// Float weights of type `ty` built directly with `half`, checked against the reference.
fn float_case(ty: GgmlType, encode: fn(f32) -> [u8; 2], decode: fn([u8; 2]) -> f32) {
    // 37 tokens: more than one 16-token tile, and a ragged last tile.
    let (rows, cols, n_tokens) = (29, 96, 37);
    let w = values(rows * cols, 1);
    let bytes: Vec<u8> = w.iter().flat_map(|v| encode(*v)).collect();
    let w_seen: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|c| decode([c[0], c[1]]))
        .collect();
    let x = values(n_tokens * cols, 2);
    let wm = WeightMatrix::new("blk.0.test.weight", ty, rows, cols, &bytes).unwrap();
    let out = run(&wm, &x, n_tokens);
    let vdt = kernels(ty).unwrap().vec_dot_type;
    let a_seen = seen_activations(vdt, &x, cols);
    // The activation conversion is ggml's rounding, checked here against `half`'s.
    let a_half: Vec<f32> = x.iter().map(|v| decode(encode(*v))).collect();
    assert_eq!(a_seen, a_half, "{ty}: activation rounding");
    check_against_reference(ty, &w_seen, &a_seen, &out, rows, cols);
}

#[test]
fn f32_weights_match_reference() {
    let (rows, cols, n_tokens) = (33, 40, 19);
    let w = values(rows * cols, 3);
    let x = values(n_tokens * cols, 4);
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let wm = WeightMatrix::new("output.weight", GgmlType::F32, rows, cols, &bytes).unwrap();
    let out = run(&wm, &x, n_tokens);
    check_against_reference(GgmlType::F32, &w, &x, &out, rows, cols);
}

#[test]
fn f16_weights_match_reference() {
    float_case(
        GgmlType::F16,
        |v| f16::from_f32(v).to_le_bytes(),
        |b| f16::from_le_bytes(b).to_f32(),
    );
}

#[test]
fn bf16_weights_match_reference() {
    float_case(
        GgmlType::BF16,
        |v| bf16::from_f32(v).to_le_bytes(),
        |b| bf16::from_le_bytes(b).to_f32(),
    );
}

/// Every quantized weight type: weights quantized by `quantize_row`, the reference built from
/// `dequantize`. Needs the ported quantizers.
#[test]
fn quantized_weights_match_reference() {
    let cols = 512; // a multiple of every block size (Q1_0: 128, K-quants: 256)
    let (rows, n_tokens) = (13, 5);
    for ty in supported_types().filter(|t| t.is_quantized()) {
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let w = values(rows * cols, 10 + ty.id() as u64);
        let mut bytes = vec![0u8; rows * row_bytes];
        for (src, dst) in w.chunks_exact(cols).zip(bytes.chunks_exact_mut(row_bytes)) {
            quantize_row(ty, src, dst, None).unwrap();
        }
        let mut w_seen = vec![0f32; rows * cols];
        dequantize(ty, &bytes, &mut w_seen).unwrap();
        let x = values(n_tokens * cols, 20 + ty.id() as u64);
        let wm = WeightMatrix::new("blk.3.ffn_down.weight", ty, rows, cols, &bytes).unwrap();
        let out = run(&wm, &x, n_tokens);
        let vdt = kernels(ty).unwrap().vec_dot_type;
        let a_seen = seen_activations(vdt, &x, cols);
        if vdt == GgmlType::Q8_1 {
            // Q4_1/Q5_1 × Q8_1 kernels add `m · s` per block, where ggml stores the activation
            // block's `s` as f16(Σq · d) with the *unrounded* d: not Σ of the dequantized
            // activations. Model that term exactly.
            let mins = block_mins(ty, &bytes);
            let sums = q8_1_sums(&x, cols);
            let blocks = cols / 32;
            let exact = |t: usize, r: usize| -> f64 {
                let (wr, at) = (
                    &w_seen[r * cols..(r + 1) * cols],
                    &a_seen[t * cols..(t + 1) * cols],
                );
                let plain: f64 = wr.iter().zip(at).map(|(w, a)| *w as f64 * *a as f64).sum();
                let correction: f64 = (0..blocks)
                    .map(|b| {
                        let seen: f64 = at[b * 32..(b + 1) * 32].iter().map(|&a| a as f64).sum();
                        mins[r * blocks + b] as f64 * (sums[t * blocks + b] as f64 - seen)
                    })
                    .sum();
                plain + correction
            };
            check_close(ty, &w_seen, &a_seen, &out, rows, cols, "reference", &exact);
        } else {
            check_against_reference(ty, &w_seen, &a_seen, &out, rows, cols);
        }
    }
}

/// The `m` field of every block of Q4_1 / Q5_1 weight bytes.
fn block_mins(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    use ggml_compat::blocks::{BlockQ4_1, BlockQ5_1};
    let size = ty.type_size();
    bytes
        .chunks_exact(size)
        .map(|b| match ty {
            GgmlType::Q4_1 => bytemuck::pod_read_unaligned::<BlockQ4_1>(b).m.to_f32(),
            GgmlType::Q5_1 => bytemuck::pod_read_unaligned::<BlockQ5_1>(b).m.to_f32(),
            other => panic!("{other} has no block minimum"),
        })
        .collect()
}

/// The stored `s` of every Q8_1 block of the activations `x`.
fn q8_1_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let row_bytes = GgmlType::Q8_1.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; x.len() / cols * row_bytes];
    quantize_activations(GgmlType::Q8_1, x, cols, &mut bytes).unwrap();
    bytes
        .chunks_exact(std::mem::size_of::<BlockQ8_1>())
        .map(|b| bytemuck::pod_read_unaligned::<BlockQ8_1>(b).s.to_f32())
        .collect()
}

#[test]
fn scratch_is_reused_across_shapes() {
    let mut scratch = MatmulScratch::default();
    let par = ScopedThreads::new(2);
    for (rows, cols, n_tokens) in [(8, 64, 3), (5, 32, 9), (8, 64, 1)] {
        let w = values(rows * cols, rows as u64);
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let wm = WeightMatrix::new("w", GgmlType::F16, rows, cols, &bytes).unwrap();
        let x = values(n_tokens * cols, cols as u64);
        let mut out = vec![0f32; rows * n_tokens];
        matmul_with(&par, &mut scratch, &wm, &x, n_tokens, &mut out).unwrap();
        let mut fresh = vec![0f32; rows * n_tokens];
        matmul(&wm, &x, n_tokens, &mut fresh, 1).unwrap();
        assert_eq!(out, fresh);
    }
}

#[test]
fn errors_name_the_tensor_and_what_is_wrong() {
    let bytes = vec![0u8; 4 * 18];
    let msg = |e: MatmulError| e.to_string();

    let e = WeightMatrix::new("blk.1.attn_q.weight", GgmlType::Q4_0, 2, 48, &bytes).unwrap_err();
    assert!(matches!(e, MatmulError::NotWholeBlocks { .. }), "{e}");
    assert!(msg(e).contains("blk.1.attn_q.weight"));

    let e = WeightMatrix::new("blk.1.attn_q.weight", GgmlType::Q4_0, 3, 64, &bytes).unwrap_err();
    assert!(
        matches!(
            e,
            MatmulError::BadWeightBytes {
                got: 72,
                want: Some(108),
                ..
            }
        ),
        "{e}"
    );

    let e = WeightMatrix::new("huge", GgmlType::Q4_0, usize::MAX, 64, &bytes).unwrap_err();
    assert!(
        matches!(e, MatmulError::BadWeightBytes { want: None, .. }),
        "{e}"
    );

    // IQ2_XXS: 256 elements in 66 bytes, a real ggml type without kiln kernels.
    let iq = vec![0u8; 2 * 66];
    let wm = WeightMatrix::new("token_embd.weight", GgmlType::IQ2_XXS, 2, 256, &iq).unwrap();
    let mut out = vec![0f32; 2];
    let e = matmul(&wm, &[0.0; 256], 1, &mut out, 1).unwrap_err();
    assert!(
        matches!(
            e,
            MatmulError::Unsupported {
                ty: GgmlType::IQ2_XXS,
                ..
            }
        ),
        "{e}"
    );
    let m = msg(e);
    assert!(
        m.contains("IQ2_XXS") && m.contains("token_embd.weight"),
        "{m}"
    );

    let wm = WeightMatrix::new("blk.1.attn_q.weight", GgmlType::Q4_0, 2, 64, &bytes).unwrap();
    let e = matmul(&wm, &[0.0; 100], 2, &mut [0.0; 4], 1).unwrap_err();
    assert!(
        matches!(
            e,
            MatmulError::BadInput {
                got: 100,
                n_tokens: 2,
                cols: 64,
                ..
            }
        ),
        "{e}"
    );
    let e = matmul(&wm, &[0.0; 128], 2, &mut [0.0; 3], 1).unwrap_err();
    assert!(
        matches!(
            e,
            MatmulError::BadOutput {
                got: 3,
                n_tokens: 2,
                rows: 2,
                ..
            }
        ),
        "{e}"
    );

    // Zero tokens is a valid, empty product.
    matmul(&wm, &[], 0, &mut [], 4).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Against ggml's golden data: weights `quant.bin` times activations `act.f32` must reproduce
// `act_quant.bin` (the one-time activation conversion) and `vec_dot.f32` (the products).

/// Golden check of one type: 6 weight rows of 512, 6 activation rows.
fn golden_case(ty: GgmlType) {
    let (rows, cols) = (6, 512);
    let dir = golden_root().join(ty.name());
    let quant = read(dir.join("quant.bin"));
    let act = floats(&read(dir.join("act.f32")));
    let want_act = read(dir.join("act_quant.bin"));
    let vec_dot = floats(&read(dir.join("vec_dot.f32")));
    let dequant = floats(&read(dir.join("dequant.f32")));

    let vdt = kernels(ty).unwrap().vec_dot_type;
    let mut act_q = vec![0u8; want_act.len()];
    quantize_activations(vdt, &act, cols, &mut act_q).unwrap();
    assert!(
        act_q == want_act,
        "{ty}: activations converted to {vdt} differ from act_quant.bin"
    );

    let wm = WeightMatrix::new(ty.name(), ty, rows, cols, &quant).unwrap();
    let out = run(&wm, &act, rows);
    // Each output is exactly one vec_dot of golden bytes (orientation and tiling check) ...
    let k = kernels(ty).unwrap();
    let (w_row, a_row) = (quant.len() / rows, want_act.len() / rows);
    for (i, got) in out.iter().enumerate() {
        let (t, r) = (i / rows, i % rows);
        let w = &quant[r * w_row..(r + 1) * w_row];
        let a = &want_act[t * a_row..(t + 1) * a_row];
        assert_eq!(
            got.to_bits(),
            (k.vec_dot)(cols, w, a).to_bits(),
            "{ty} [t {t}][r {r}]"
        );
    }
    // ... and agrees with ggml's, whose vec_dot.f32 is [weight row][activation row].
    let ggml = |t: usize, r: usize| vec_dot[r * rows + t] as f64;
    check_close(ty, &dequant, &act, &out, rows, cols, "ggml", &ggml);
}

#[test]
fn golden_float_types() {
    golden_case(GgmlType::F16);
    golden_case(GgmlType::BF16);
}

/// Needs the ported activation quantizers (Q8_0, Q8_1, Q8_K).
#[test]
fn golden_quantized_types() {
    for ty in supported_types().filter(|t| t.is_quantized()) {
        golden_case(ty);
    }
}

/// Every output of a batch equals the active table's single `vec_dot` for that (row, token),
/// bit for bit — whether a batched kernel computed it or the per-pair fallback did — for odd
/// row counts, token counts that leave partial tiles, odd and even block counts, 1–3 threads.
/// (ggml's repack / tiled orders for Q4_K and Q6_K are kept out: 13 rows are not repacked, and
/// Q6_K is checked only below the tiled batch size.) Run it under each `KILN_KERNELS`.
#[test]
fn batches_equal_single_vec_dots_bit_for_bit() {
    for ty in supported_types() {
        let k = kernels(ty).unwrap();
        let block = ty.block_size().max(k.vec_dot_type.block_size());
        let odd_cols = block * 9;
        let even_cols = block * if block >= 256 { 2 } else { 18 };
        for (cols, rows, n_tokens) in [
            (odd_cols, 13, 19),
            (even_cols, 37, 9),
            (even_cols, 12, 2),
            (odd_cols, 4, 33),
        ] {
            if ty == GgmlType::Q6_K && n_tokens >= 8 {
                continue;
            }
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let w = values(rows * cols, 30 + ty.id() as u64);
            let mut bytes = vec![0u8; rows * row_bytes];
            for (src, dst) in w.chunks_exact(cols).zip(bytes.chunks_exact_mut(row_bytes)) {
                if ty.is_quantized() {
                    quantize_row(ty, src, dst, None).unwrap();
                } else {
                    quantize_activations(ty, src, cols, dst).unwrap();
                }
            }
            let x = values(n_tokens * cols, 40 + ty.id() as u64);
            let wm = WeightMatrix::new("blk.0.attn_q.weight", ty, rows, cols, &bytes).unwrap();
            let out = run(&wm, &x, n_tokens);
            let act_row = k.vec_dot_type.row_bytes(cols as u64).unwrap() as usize;
            let mut act = vec![0u8; n_tokens * act_row];
            quantize_activations(k.vec_dot_type, &x, cols, &mut act).unwrap();
            for t in 0..n_tokens {
                for r in 0..rows {
                    let a = &act[t * act_row..(t + 1) * act_row];
                    let want = (k.vec_dot)(cols, wm.row(r).unwrap(), a);
                    let got = out[t * rows + r];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} {rows}×{cols}, {n_tokens} tokens: [t {t}][r {r}] {got} vs {want}"
                    );
                }
            }
        }
    }
}
