//! AWQ scale and clip search (`kiln::calib::awq`) on synthetic activations with outlier channels:
//! the chosen scales must beat RTN on the calibration samples and on held-out samples, folding
//! must leave the f32 network unchanged, ties must hold exactly, and degenerate inputs must not
//! produce NaN or infinite scales.

mod common;

use kiln::calib::awq::{
    class_scales, fold_into_norm, fold_into_rows, gqa_tie, output_loss, scale_cols, scale_samples,
    search_clip, search_scales, AwqError, AwqOptions, Target, TargetMut,
};
use kiln::calib::quantize_row_weighted;
use kiln::ggml_compat::quant;
use kiln::ggml_compat::types::GgmlType;

/// Standard normal values (Box–Muller over the shared xorshift stream).
fn normal(len: usize, seed: u64) -> Vec<f32> {
    let u = common::values(2 * len, seed);
    u.chunks_exact(2)
        .map(|p| {
            let u1 = (p[0] * 0.5 + 0.5).max(1e-7);
            let u2 = p[1] * 0.5 + 0.5;
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// `(n, cols)` activations: per-channel magnitudes spread over 0.3..1.7, a few outlier channels
/// (×20, ×50, ×100, ×30) as in LLM activations, and the same channels in every seed.
fn activations(n: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mag: Vec<f32> = common::values(cols, 99)
        .iter()
        .map(|v| 1.0 + 0.7 * v)
        .collect();
    let outliers = [(3usize, 20f32), (70, 50.0), (130, 100.0), (201, 30.0)];
    let mut x = normal(n * cols, seed);
    for row in x.chunks_exact_mut(cols) {
        for (v, m) in row.iter_mut().zip(&mag) {
            *v *= m;
        }
        for &(c, f) in &outliers {
            if c < cols {
                row[c] *= f;
            }
        }
    }
    x
}

fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    normal(rows * cols, seed).iter().map(|v| v * 0.02).collect()
}

const COLS: usize = 256;
const N: usize = 512;

/// Per type: the scales cut the output error by at least `margin` (fraction of RTN's) on the
/// calibration samples and on held-out ones. Measured (deterministic; calibration/held-out
/// reduction): Q4_0 0.835/0.838, Q4_K 0.353/0.363, Q3_K 0.884/0.885, Q2_K 0.350/0.374,
/// TQ2_0 0.049/0.048 (α 0.3, 0.2, 0.3, 0.2, 0.15); the asserted margins sit below those.
///
/// TQ2_0's RTN here is kiln's weighted fit (`calib::quantize_row_weighted`; ggml's quantizer
/// ignores the importance matrix and sets `d = amax`), which alone brings the held-out loss from
/// ggml's 1626 to 108 — below the 152 that AWQ's scales reached on top of ggml's fit (a 0.906
/// cut then) — so the scales have little left to cut; AWQ ends at 102, 0.063 of ggml's RTN
/// (asserted below 0.07).
#[test]
fn scales_beat_rtn_on_held_out_samples() {
    let train = activations(N, COLS, 1);
    let held = activations(N, COLS, 2);
    let w1 = weights(128, COLS, 3);
    let w2 = weights(64, COLS, 4);
    let ones = vec![1f32; COLS];
    for (ty, margin) in [
        (GgmlType::Q4_0, 0.75),
        (GgmlType::Q4_K, 0.30),
        (GgmlType::Q3_K, 0.80),
        (GgmlType::Q2_K, 0.30),
        (GgmlType::TQ2_0, 0.04),
    ] {
        let targets = [
            Target {
                name: "a",
                w: &w1,
                rows: 128,
                ty,
            },
            Target {
                name: "b",
                w: &w2,
                rows: 64,
                ty,
            },
        ];
        let opts = AwqOptions::default();
        let sc = search_scales(&train, COLS, &targets, None, &opts).unwrap();
        assert!(sc.s.iter().all(|s| s.is_finite() && *s > 0.0), "{ty}");
        assert!(sc.alpha > 0.0, "{ty}: RTN chosen");
        let rtn = output_loss(&train, COLS, &targets, &ones, true).unwrap();
        assert!(
            (rtn - sc.loss_rtn).abs() <= 1e-9 * rtn,
            "{ty}: {rtn} {}",
            sc.loss_rtn
        );
        let cut = 1.0 - sc.loss_best / sc.loss_rtn;
        let held_rtn = output_loss(&held, COLS, &targets, &ones, true).unwrap();
        let held_awq = output_loss(&held, COLS, &targets, &sc.s, true).unwrap();
        let held_cut = 1.0 - held_awq / held_rtn;
        eprintln!(
            "{ty}: alpha {} calibration cut {cut:.3} held-out cut {held_cut:.3}",
            sc.alpha
        );
        assert!(cut >= margin, "{ty}: calibration cut {cut}");
        assert!(held_cut >= margin, "{ty}: held-out cut {held_cut}");
        if ty == GgmlType::TQ2_0 {
            // without the importance matrix TQ2_0 is ggml's reference quantizer
            let ggml_rtn = output_loss(&held, COLS, &targets, &ones, false).unwrap();
            assert!(
                held_awq < 0.07 * ggml_rtn,
                "{ty}: held-out {held_awq} vs ggml's RTN {ggml_rtn}"
            );
        }
    }
}

/// Without the importance matrix the search still works (types that would take one quantize
/// with ggml's reference quantizer).
#[test]
fn scales_beat_rtn_without_imatrix() {
    let train = activations(N, COLS, 5);
    let w = weights(96, COLS, 6);
    let targets = [Target {
        name: "w",
        w: &w,
        rows: 96,
        ty: GgmlType::Q4_K,
    }];
    let opts = AwqOptions {
        use_imatrix: false,
        ..Default::default()
    };
    let sc = search_scales(&train, COLS, &targets, None, &opts).unwrap();
    assert!(sc.loss_best < 0.8 * sc.loss_rtn, "{sc:?}");
}

/// Rows are split between threads; every row's error depends on that row alone, so 1 and 3
/// threads give the same scales, losses and clipped weights, bit for bit.
#[test]
fn threads_do_not_change_results() {
    let x = activations(N, COLS, 26);
    let w = weights(70, COLS, 27);
    let targets = [Target {
        name: "w",
        w: &w,
        rows: 70,
        ty: GgmlType::Q4_K,
    }];
    let run = |threads| {
        let opts = AwqOptions {
            threads,
            grid: 5,
            ..Default::default()
        };
        let sc = search_scales(&x, COLS, &targets, None, &opts).unwrap();
        let mut wc = w.clone();
        let mut t = TargetMut {
            name: "w",
            w: &mut wc,
            rows: 70,
            ty: GgmlType::Q4_K,
        };
        let st = search_clip(&x, COLS, &mut t, &opts).unwrap();
        (sc, st, wc)
    };
    let (a, ca, wa) = run(1);
    let (b, cb, wb) = run(3);
    assert_eq!(a.alpha, b.alpha);
    assert_eq!(a.loss_best.to_bits(), b.loss_best.to_bits());
    assert_eq!(a.loss_rtn.to_bits(), b.loss_rtn.to_bits());
    assert_eq!(ca.loss_after.to_bits(), cb.loss_after.to_bits());
    assert_eq!(ca.blocks_clipped, cb.blocks_clipped);
    assert!(wa.iter().zip(&wb).all(|(p, q)| p.to_bits() == q.to_bits()));
}

fn rms_norm(x: &[f32], w: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + 1e-6).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * w).collect()
}

fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rel * scale, "{what}[{i}]: {x} vs {y}");
    }
}

/// norm → linear and up → down compute the same f32 outputs after folding the searched scales.
#[test]
fn folding_keeps_the_network() {
    let cols = 256;
    let x = activations(64, cols, 7);
    let norm: Vec<f32> = common::values(cols, 8)
        .iter()
        .map(|v| 1.0 + 0.5 * v)
        .collect();
    let w = weights(64, cols, 9);
    let h: Vec<f32> = x
        .chunks_exact(cols)
        .flat_map(|r| rms_norm(r, &norm))
        .collect();
    let targets = [Target {
        name: "q",
        w: &w,
        rows: 64,
        ty: GgmlType::Q4_0,
    }];
    let sc = search_scales(&h, cols, &targets, None, &AwqOptions::default()).unwrap();
    assert!(sc.alpha > 0.0);
    let (mut norm2, mut w2) = (norm.clone(), w.clone());
    fold_into_norm(&mut norm2, &sc.s);
    scale_cols(&mut w2, 64, cols, &sc.s);
    for row in x.chunks_exact(cols) {
        let want = matvec(&w, &rms_norm(row, &norm));
        let got = matvec(&w2, &rms_norm(row, &norm2));
        assert_close(&got, &want, 1e-5, "norm fold");
    }

    // up (256 → 512) then down (512 → 128): scales on down's input folded into up's rows.
    let (inner, out) = (512, 128);
    let up = weights(inner, cols, 10);
    let down = weights(out, inner, 11);
    let a: Vec<f32> = x.chunks_exact(cols).flat_map(|r| matvec(&up, r)).collect();
    let targets = [Target {
        name: "down",
        w: &down,
        rows: out,
        ty: GgmlType::Q4_K,
    }];
    let sc = search_scales(&a, inner, &targets, None, &AwqOptions::default()).unwrap();
    let (mut up2, mut down2) = (up.clone(), down.clone());
    fold_into_rows(&mut up2, inner, cols, &sc.s);
    scale_cols(&mut down2, out, inner, &sc.s);
    for row in x.chunks_exact(cols) {
        let want = matvec(&down, &matvec(&up, row));
        let got = matvec(&down2, &matvec(&up2, row));
        assert_close(&got, &want, 1e-5, "up/down fold");
    }
}

/// GQA: o_proj's columns of query heads that share a kv head get one scale, exactly, and folding
/// the class scales into v keeps attention's output (the per-head value mix) unchanged.
#[test]
fn tie_is_respected_and_folds_into_v() {
    let (n_head, n_kv, hd) = (6, 2, 32);
    let cols = n_head * hd;
    let tie = gqa_tie(n_head, n_kv, hd);
    assert_eq!((tie[hd], tie[2 * hd], tie[3 * hd]), (0, 0, hd)); // heads 0, 1, 2 → kv 0; 3 → kv 1
    assert_eq!(tie[5], tie[hd + 5]);
    assert_eq!(tie[3 * hd + 7], hd + 7); // head 3 → kv 1
                                         // outlier channels 3, 70, 130 sit in heads 0, 2, 4: untied, they get scales of their own
    let x = activations(N, cols, 12);
    let w = weights(96, cols, 13);
    let targets = [Target {
        name: "o",
        w: &w,
        rows: 96,
        ty: GgmlType::Q4_0,
    }];
    let opts = AwqOptions::default();
    let free = search_scales(&x, cols, &targets, None, &opts).unwrap();
    let tied = search_scales(&x, cols, &targets, Some(&tie), &opts).unwrap();
    assert!(tied.alpha > 0.0);
    for i in 0..cols {
        for j in 0..cols {
            if tie[i] == tie[j] {
                assert_eq!(tied.s[i].to_bits(), tied.s[j].to_bits(), "{i} {j}");
            }
        }
    }
    assert!(free.s.iter().zip(&tied.s).any(|(a, b)| a != b));
    assert!(tied.loss_best <= tied.loss_rtn);

    // v (n_kv·hd rows) → per query head h, the value is v row block h / group; o reads it.
    let dim = 64;
    let v = weights(n_kv * hd, dim, 14);
    let cs = class_scales(&tied.s, &tie);
    assert_eq!(cs.len(), n_kv * hd);
    let (mut v2, mut o2) = (v.clone(), w.clone());
    fold_into_rows(&mut v2, n_kv * hd, dim, &cs);
    scale_cols(&mut o2, 96, cols, &tied.s);
    let attn = |v: &[f32], o: &[f32], inp: &[f32]| {
        let vals = matvec(v, inp);
        let per_head: Vec<f32> = (0..cols)
            .map(|c| vals[(c / hd / (n_head / n_kv)) * hd + c % hd])
            .collect();
        matvec(o, &per_head)
    };
    for inp in normal(8 * dim, 15).chunks_exact(dim) {
        assert_close(&attn(&v2, &o2, inp), &attn(&v, &w, inp), 1e-5, "v/o fold");
    }
}

/// An all-zero weight row and an always-zero input channel: finite, positive scales and finite
/// losses, for every type; clipping stays finite too.
#[test]
fn zero_rows_and_dead_channels_stay_finite() {
    let mut x = activations(256, COLS, 16);
    for row in x.chunks_exact_mut(COLS) {
        row[17] = 0.0;
        row[40] = 0.0;
    }
    let mut w = weights(32, COLS, 17);
    w[5 * COLS..6 * COLS].fill(0.0);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
        GgmlType::TQ2_0,
        GgmlType::IQ4_XS,
    ] {
        let targets = [Target {
            name: "w",
            w: &w,
            rows: 32,
            ty,
        }];
        let sc = search_scales(&x, COLS, &targets, None, &AwqOptions::default()).unwrap();
        assert!(sc.s.iter().all(|s| s.is_finite() && *s > 0.0), "{ty}");
        assert!(sc.loss_rtn.is_finite() && sc.loss_best.is_finite(), "{ty}");
        let mut ws = w.clone();
        scale_cols(&mut ws, 32, COLS, &sc.s);
        let mut xs = x.clone();
        scale_samples(&mut xs, COLS, &sc.s);
        assert!(xs.iter().all(|v| v.is_finite()));
        let mut t = TargetMut {
            name: "w",
            w: &mut ws,
            rows: 32,
            ty,
        };
        let st = search_clip(&xs, COLS, &mut t, &AwqOptions::default()).unwrap();
        assert!(
            st.loss_after.is_finite() && st.loss_after <= st.loss_before,
            "{ty}"
        );
        assert!(ws.iter().all(|v| v.is_finite()), "{ty}");
        assert!(ws[5 * COLS..6 * COLS].iter().all(|&v| v == 0.0));
    }
}

/// Output error `Σ ‖X w0ᵀ − X deq(quant(w))ᵀ‖² / n`, computed naively here.
fn naive_loss(x: &[f32], w0: &[f32], w: &[f32], cols: usize, ty: GgmlType, imat: &[f32]) -> f64 {
    let rows = w.len() / cols;
    let mut deq = vec![0f32; w.len()];
    let mut buf = vec![0u8; cols / ty.block_size() * ty.type_size()];
    for (src, dst) in w.chunks_exact(cols).zip(deq.chunks_exact_mut(cols)) {
        quantize_row_weighted(ty, src, &mut buf, Some(imat)).unwrap();
        quant::dequantize(ty, &buf, dst).unwrap();
    }
    let mut loss = 0f64;
    for xr in x.chunks_exact(cols) {
        for r in 0..rows {
            let e: f64 = (0..cols)
                .map(|c| xr[c] as f64 * (w0[r * cols + c] - deq[r * cols + c]) as f64)
                .sum();
            loss += e * e;
        }
    }
    loss / (x.len() / cols) as f64
}

/// Clipping on heavy-tailed weights: shrinks some blocks, never makes the calibration error worse,
/// reports the error a naive f64 evaluation of the returned weights gives (measured agreement
/// ≤ 3e-7 relative, asserted 1e-5), and helps held-out too.
/// Measured cut (calibration/held-out) for these inputs: Q4_0 0.844/0.824, Q3_K 0.492/0.523,
/// Q2_K 0.659/0.446; asserted: held-out cut at least `margin`.
#[test]
fn clip_reduces_error_and_reports_it_honestly() {
    let x = activations(N, COLS, 18);
    let held = activations(N, COLS, 19);
    // Laplace-like weights: a normal times an exponential spread, so blocks have long tails
    let spread: Vec<f32> = common::values(32 * COLS, 20)
        .iter()
        .map(|u| -(u * 0.5 + 0.5).max(1e-6).ln())
        .collect();
    let w0: Vec<f32> = weights(32, COLS, 21)
        .iter()
        .zip(&spread)
        .map(|(w, s)| w * s)
        .collect();
    let imat = |x: &[f32]| -> Vec<f32> {
        let mut m = vec![0f64; COLS];
        for r in x.chunks_exact(COLS) {
            for (a, &v) in m.iter_mut().zip(r) {
                *a += v as f64 * v as f64;
            }
        }
        m.iter()
            .map(|v| (v / (x.len() / COLS) as f64) as f32)
            .collect()
    };
    for (ty, margin) in [
        (GgmlType::Q4_0, 0.7),
        (GgmlType::Q3_K, 0.4),
        (GgmlType::Q2_K, 0.35),
    ] {
        let mut w = w0.clone();
        let mut t = TargetMut {
            name: "w",
            w: &mut w,
            rows: 32,
            ty,
        };
        let st = search_clip(&x, COLS, &mut t, &AwqOptions::default()).unwrap();
        assert!(st.blocks_clipped > 0, "{ty}: {st:?}");
        assert!(st.loss_after < st.loss_before, "{ty}: {st:?}");
        let im = imat(&x);
        let before = naive_loss(&x, &w0, &w0, COLS, ty, &im);
        let after = naive_loss(&x, &w0, &w, COLS, ty, &im);
        assert!(
            (before - st.loss_before).abs() <= 1e-5 * before,
            "{ty}: {before} {st:?}"
        );
        assert!(
            (after - st.loss_after).abs() <= 1e-5 * after,
            "{ty}: {after} {st:?}"
        );
        let hm = imat(&held);
        let held_cut = 1.0
            - naive_loss(&held, &w0, &w, COLS, ty, &hm)
                / naive_loss(&held, &w0, &w0, COLS, ty, &hm);
        eprintln!(
            "{ty}: clip {}/{} blocks, cut {:.3}, held-out cut {held_cut:.3}",
            st.blocks_clipped,
            st.blocks,
            1.0 - st.loss_after / st.loss_before
        );
        assert!(held_cut >= margin, "{ty}: held-out cut {held_cut}");
    }
}

/// search_clip's per-block choice is exact only if the quantizer (`calib::quantize_row_weighted`:
/// ggml's, or kiln's fit for TQ2_0 with weights) quantizes each block of a row on its own (given
/// the importance matrix). True for the K-quants, IQ4_XS and TQ2_0, and for Q4_0 without
/// an importance matrix; Q4_0 *with* one is not: ggml's `quantize_row_q4_0_impl` weighs each
/// value by `qw · sqrt(σ² + x²)` with `σ²` the mean square of the whole row (likewise Q4_1,
/// Q5_0, Q5_1), so clipping one block nudges the others. search_clip's per-row check covers it.
#[test]
fn which_types_quantize_blocks_independently() {
    let row = normal(4 * 256, 22);
    let im: Vec<f32> = common::values(4 * 256, 23)
        .iter()
        .map(|v| v + 1.5)
        .collect();
    let independent = |ty: GgmlType, im: Option<&[f32]>| {
        let bs = ty.block_size();
        let mut whole = vec![0u8; row.len() / bs * ty.type_size()];
        quantize_row_weighted(ty, &row, &mut whole, im).unwrap();
        whole
            .chunks_exact(ty.type_size())
            .enumerate()
            .all(|(b, chunk)| {
                let mut one = vec![0u8; ty.type_size()];
                let r = b * bs..(b + 1) * bs;
                quantize_row_weighted(ty, &row[r.clone()], &mut one, im.map(|m| &m[r])).unwrap();
                chunk == &one[..]
            })
    };
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
        GgmlType::TQ2_0,
        GgmlType::IQ4_XS,
    ] {
        assert!(independent(ty, Some(&im)), "{ty}");
    }
    assert!(independent(GgmlType::Q4_0, None));
    assert!(!independent(GgmlType::Q4_0, Some(&im)));
}

#[test]
fn shape_errors_are_errors() {
    let x = activations(8, 576, 24);
    let w = weights(4, 576, 25);
    let t = |ty| Target {
        name: "blk.0.attn_q.weight",
        w: &w,
        rows: 4,
        ty,
    };
    let opts = AwqOptions::default();
    let e = search_scales(&x, 576, &[t(GgmlType::Q4_K)], None, &opts).unwrap_err();
    assert!(matches!(e, AwqError::NotWholeBlocks { .. }), "{e}");
    assert!(e.to_string().contains("blk.0.attn_q.weight"));
    let e = search_scales(&x[..100], 576, &[t(GgmlType::Q4_0)], None, &opts).unwrap_err();
    assert!(matches!(e, AwqError::Samples { .. }), "{e}");
    let bad = Target {
        rows: 5,
        ..t(GgmlType::Q4_0)
    };
    let e = search_scales(&x, 576, &[bad], None, &opts).unwrap_err();
    assert!(matches!(e, AwqError::Weights { .. }), "{e}");
    let e = search_scales(&x, 576, &[t(GgmlType::Q4_0)], Some(&[0; 3]), &opts).unwrap_err();
    assert!(matches!(e, AwqError::Tie { .. }), "{e}");
    let e = search_scales(&x, 576, &[], None, &opts).unwrap_err();
    assert!(matches!(e, AwqError::NoTargets), "{e}");
}

/// Time of `search_scales` on SmolLM2-135M's groups with 1024 samples. Ignored by default; run
/// `cargo test --release --test calib_awq smollm2_group_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn smollm2_group_timing() {
    let groups: [(&str, usize, &[usize], GgmlType); 5] = [
        ("q,k,v", 576, &[576, 192, 192], GgmlType::Q4_0),
        ("gate,up", 576, &[1536, 1536], GgmlType::Q4_0),
        ("down", 1536, &[576], GgmlType::Q4_0),
        ("down", 1536, &[576], GgmlType::Q4_K),
        ("down", 1536, &[576], GgmlType::Q2_K),
    ];
    for (threads, (name, cols, rows, ty)) in [1, 2]
        .into_iter()
        .flat_map(|t| groups.iter().map(move |g| (t, *g)))
    {
        let opts = AwqOptions {
            threads,
            ..Default::default()
        };
        let x = activations(1024, cols, 30);
        let ws: Vec<Vec<f32>> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| weights(r, cols, 31 + i as u64))
            .collect();
        let targets: Vec<Target> = ws
            .iter()
            .zip(rows)
            .map(|(w, &rows)| Target { name, w, rows, ty })
            .collect();
        let (t, cpu) = (std::time::Instant::now(), thread_cpu_seconds());
        let sc = search_scales(&x, cols, &targets, None, &opts).unwrap();
        let (scale_time, scale_cpu) = (t.elapsed(), thread_cpu_seconds() - cpu);
        let mut w = ws[0].clone();
        scale_cols(&mut w, rows[0], cols, &sc.s);
        let mut xs = x.clone();
        scale_samples(&mut xs, cols, &sc.s);
        let mut tm = TargetMut {
            name,
            w: &mut w,
            rows: rows[0],
            ty,
        };
        let t = std::time::Instant::now();
        let st = search_clip(&xs, cols, &mut tm, &opts).unwrap();
        eprintln!(
            "{threads} thread(s) {name} {ty}: search_scales {:.2} s (this thread's CPU {:.2} s, α {}, cut {:.3}); search_clip on the first \
             ({} rows) {:.2} s (cut {:.3})",
            scale_time.as_secs_f64(),
            scale_cpu,
            sc.alpha,
            1.0 - sc.loss_best / sc.loss_rtn,
            rows[0],
            t.elapsed().as_secs_f64(),
            1.0 - st.loss_after / st.loss_before
        );
    }
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, ns on CPU), so the
/// timing means something on a loaded machine; NaN elsewhere.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns * 1e-9)
}
