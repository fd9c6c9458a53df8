//! The SIMD kernel tables against ggml's golden dot products and against the scalar kernels,
//! for every instruction set this CPU runs.
//!
//! - golden: each SIMD kernel on `../shared/golden/quant/<T>/quant.bin` × `act_quant.bin`
//!   agrees with ggml's `vec_dot.f32` within the tolerance of `tests/kernels_golden.rs`;
//! - random rows of 1, 2, 3, 7, 16 and 33 blocks (floats also 31 .. 4099 elements), plus all-zero blocks and blocks whose quants
//!   are all at the extremes of their range, agree with the scalar kernel within that tolerance,
//!   and misaligned rows give the bit-identical result;
//! - each table really holds the SIMD kernels listed here (no silent fallback to scalar).
//!
//! `cargo test --release --test kernels_simd -- --ignored --nocapture time_per_row` prints
//! single-thread nanoseconds per 4096-element row for each instruction set (not an assertion).

use ggml_compat::quant::{dequantize, quantize_row};
use ggml_compat::GgmlType;
use kiln::kernels::{self, Isa, KernelTable};
use std::path::PathBuf;

/// The weight types each instruction set has its own kernel for. A table that fell back to the
/// scalar (or a lower) kernel for one of these fails `tables_hold_their_simd_kernels`.
fn own_types(isa: Isa) -> &'static [GgmlType] {
    use GgmlType::*;
    match isa {
        Isa::Scalar => &[],
        Isa::Avx2 => &[
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K, F16, F32, BF16, Q2_K, Q3_K, Q5_K, IQ4_NL,
            IQ4_XS, TQ2_0, MXFP4, Q1_0, Q2_0, TQ1_0,
        ],
        // Only kernels that sum in ggml's AVX-512 build's order (see src/kernels/x86_avx512.rs).
        Isa::Avx512 => &[F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0],
        // The same kernels built twice (plain NEON and with `sdot`).
        Isa::Neon | Isa::NeonDot => &[
            Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, F16, F32, Q2_K, Q3_K, IQ4_XS,
            TQ2_0, TQ1_0, Q1_0, Q2_0, MXFP4,
        ],
    }
}

/// Every SIMD instruction set this CPU runs, with its table.
fn simd_tables() -> Vec<&'static KernelTable> {
    Isa::ALL
        .into_iter()
        .filter(|isa| *isa != Isa::Scalar && isa.is_available())
        .map(|isa| kernels::table(isa).unwrap())
        .collect()
}

/// The types with a SIMD kernel in `table` (its own or inherited).
fn simd_types(table: &KernelTable) -> Vec<GgmlType> {
    kernels::supported_types()
        .filter(|ty| table.kernel_isa(*ty) != Some(Isa::Scalar))
        .collect()
}

fn scalar_table() -> &'static KernelTable {
    kernels::table(Isa::Scalar).unwrap()
}

#[test]
fn tables_hold_their_simd_kernels() {
    let scalar = scalar_table();
    assert_eq!(scalar.isa(), Isa::Scalar);
    #[cfg(target_arch = "x86_64")]
    assert!(
        Isa::Avx2.is_available() || !std::arch::is_x86_feature_detected!("avx2"),
        "AVX2 CPU without the avx2 table"
    );
    #[cfg(target_arch = "aarch64")]
    assert!(
        Isa::Neon.is_available(),
        "aarch64 CPU without the neon table"
    );
    for table in simd_tables() {
        let isa = table.isa();
        // Each type listed for this instruction set or a lower one uses the kernel of the
        // highest such instruction set that lists it.
        let layers = isa.layers();
        assert_eq!(
            layers.first(),
            Some(&Isa::Scalar),
            "{isa} table not built on scalar"
        );
        assert_eq!(layers.last(), Some(&isa));
        for pair in layers.windows(2) {
            let (base, above) = (pair[0].features(), pair[1].features());
            assert!(
                base.iter().all(|f| above.contains(f)),
                "{isa}: base features not a subset"
            );
        }
        for ty in kernels::supported_types() {
            let want = layers
                .iter()
                .rev()
                .find(|l| own_types(**l).contains(&ty))
                .copied()
                .unwrap_or(Isa::Scalar);
            let got = table.kernel_isa(ty).unwrap();
            assert_eq!(got, want, "{isa} table: {ty} uses the {got} kernel");
            let k = table.get(ty).unwrap();
            let s = scalar.get(ty).unwrap();
            assert_eq!(
                k.vec_dot_type, s.vec_dot_type,
                "{isa} table: {ty} vec_dot_type"
            );
            if want != Isa::Scalar {
                assert_ne!(
                    k.vec_dot as usize, s.vec_dot as usize,
                    "{isa} table: {ty} is the scalar kernel"
                );
            }
        }
    }
}

#[test]
fn unavailable_or_unknown_isa_is_an_error_not_a_fallback() {
    for isa in Isa::ALL {
        match kernels::table(isa) {
            Ok(t) => assert_eq!(t.isa(), isa),
            Err(e) => {
                assert!(!isa.is_available(), "{isa}: {e}");
                let msg = e.to_string();
                assert!(msg.contains(isa.name()) && msg.contains("lacks"), "{msg}");
            }
        }
    }
    assert_eq!(Isa::from_name("avx2"), Some(Isa::Avx2));
    assert_eq!(Isa::from_name("neon-ish"), None);
}

/// The active table is the best this CPU runs, or the one `KILN_KERNELS` names; a name that is
/// unknown or that this CPU cannot run is an error from `init` (never a silent fallback).
#[test]
fn active_table_is_the_best_available_unless_forced() {
    let forced = std::env::var("KILN_KERNELS").ok().filter(|v| !v.is_empty());
    let want = match &forced {
        None => Isa::best(),
        Some(name) => match Isa::from_name(name).filter(|isa| isa.is_available()) {
            Some(isa) => isa,
            None => {
                let err = kernels::init().err().expect("bad KILN_KERNELS accepted");
                let msg = err.to_string();
                assert!(
                    msg.contains(name.as_str()) || msg.contains("lacks"),
                    "{msg}"
                );
                return;
            }
        },
    };
    let active = kernels::init().unwrap();
    assert_eq!(active.isa(), want);
    assert_eq!(kernels::active_isa(), want.name());
    for ty in kernels::supported_types() {
        let (k, t) = (kernels::kernels(ty).unwrap(), active.get(ty).unwrap());
        assert_eq!(k.vec_dot as usize, t.vec_dot as usize, "{ty}");
    }
}

/// `KILN_KERNELS` is read once per process, so each value is tried in a fresh run of this
/// test binary, which checks it with the test above. Under qemu user emulation without
/// binfmt_misc the binary cannot exec itself (exit 127, no output): it is then run through
/// `KILN_TEST_RUNNER` (`qemu-aarch64 -L /usr/aarch64-linux-gnu`, set by .ci/neon).
#[test]
fn kiln_kernels_is_honoured_in_a_fresh_process() {
    if std::env::var_os("KILN_KERNELS").is_some() {
        return; // already the child (or forced by the caller): the test above checks it
    }
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("KILN_TEST_RUNNER").unwrap_or_default();
    let runner: Vec<&str> = runner.split_whitespace().collect();
    let args = [
        "--exact",
        "active_table_is_the_best_available_unless_forced",
        "--test-threads=1",
    ];
    for value in ["scalar", "avx2", "avx512", "neon", "neon-dotprod", ""] {
        let run = |prefix: &[&str]| {
            let mut cmd = match prefix.split_first() {
                Some((program, rest)) => {
                    let mut c = std::process::Command::new(program);
                    c.args(rest).arg(&exe);
                    c
                }
                None => std::process::Command::new(&exe),
            };
            cmd.args(args).env("KILN_KERNELS", value).output().unwrap()
        };
        let mut out = run(&[]);
        let not_run = out.status.code() == Some(127) && out.stdout.is_empty();
        if not_run && !runner.is_empty() {
            out = run(&runner);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "KILN_KERNELS={value:?}: {} (127 without output: the binary could not be run; \
             under qemu-user set KILN_TEST_RUNNER)\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tolerance: the one of tests/kernels_golden.rs.

/// `sum_k max|w in k's block| * sum |a in k's block|`: a bound on the float terms any
/// implementation forms.
fn magnitude(ty: GgmlType, w: &[f32], a: &[f32]) -> f64 {
    let block = ty.block_size();
    w.chunks(block)
        .zip(a.chunks(block))
        .map(|(wb, ab)| {
            let wmax = wb.iter().fold(0f64, |m, w| m.max(w.abs() as f64));
            wmax * ab.iter().map(|a| a.abs() as f64).sum::<f64>()
        })
        .sum()
}

/// Within 1e-5 relative, or within 4 ulps of `magnitude` for results near 0 (see
/// `Golden::agrees` in tests/kernels_golden.rs for why).
fn agrees(got: f32, want: f32, magnitude: f64) -> bool {
    let floor = 4.0 * f32::EPSILON as f64 * magnitude;
    let tol = (1e-5 * want.abs() as f64).max(floor);
    ((got as f64) - (want as f64)).abs() <= tol
}

// ---------------------------------------------------------------------------------------------
// Golden.

fn golden_dir(name: &str) -> PathBuf {
    std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("golden/quant")
        .join(name)
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn simd_kernels_match_ggml_golden_vec_dot() {
    const ROWS: usize = 6;
    const COLS: usize = 512;
    let mut checked = 0;
    for table in simd_tables() {
        // ggml's golden set has no F32 folder (as in tests/kernels_golden.rs).
        for ty in simd_types(table)
            .into_iter()
            .filter(|t| *t != GgmlType::F32)
        {
            let k = table.get(ty).unwrap();
            let dir = golden_dir(ty.name());
            let quant = read(dir.join("quant.bin"));
            let act_quant = read(dir.join("act_quant.bin"));
            let dequant = floats(&read(dir.join("dequant.f32")));
            let act = floats(&read(dir.join("act.f32")));
            let want = floats(&read(dir.join("vec_dot.f32")));
            let w_row = ty.row_bytes(COLS as u64).unwrap() as usize;
            let a_row = k.vec_dot_type.row_bytes(COLS as u64).unwrap() as usize;
            assert_eq!(quant.len(), ROWS * w_row, "{ty}: quant.bin size");
            assert_eq!(act_quant.len(), ROWS * a_row, "{ty}: act_quant.bin size");
            assert_eq!(want.len(), ROWS * ROWS, "{ty}: vec_dot.f32 size");
            let mut failures = Vec::new();
            for i in 0..ROWS {
                for j in 0..ROWS {
                    let got = (k.vec_dot)(
                        COLS,
                        &quant[i * w_row..(i + 1) * w_row],
                        &act_quant[j * a_row..(j + 1) * a_row],
                    );
                    let m = magnitude(
                        ty,
                        &dequant[i * COLS..(i + 1) * COLS],
                        &act[j * COLS..(j + 1) * COLS],
                    );
                    let w = want[i * ROWS + j];
                    if !agrees(got, w, m) {
                        failures.push(format!(
                            "[{i}][{j}] got {got:e}, ggml {w:e} (|terms| {m:e})"
                        ));
                    }
                }
            }
            assert!(
                failures.is_empty(),
                "{} {ty}:\n{}",
                table.isa(),
                failures.join("\n")
            );
            checked += 1;
        }
    }
    if Isa::Avx2.is_available() {
        assert!(
            checked >= own_types(Isa::Avx2).len(),
            "checked only {checked}"
        );
    }
    if Isa::Neon.is_available() {
        // F32 has no golden folder.
        assert!(
            checked >= own_types(Isa::Neon).len() - 1,
            "checked only {checked}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Random and extreme rows against the scalar kernels.

/// Deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn float(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// One row of `n` floats, block by block of `block` elements, in one of several shapes:
/// 0 random, 1 all zero, 2 every element ±`amax` (every quant at an end of its range),
/// 3 random with an outlier, 4 tiny.
fn row(rng: &mut Rng, n: usize, block: usize, shapes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for b in 0..n / block {
        let shape = shapes[(b + rng.next() as usize) % shapes.len()];
        let amax = 0.1 + 4.0 * rng.float().abs();
        for i in 0..block {
            let r = rng.float();
            out.push(match shape {
                0 => r * amax,
                1 => 0.0,
                2 => {
                    if r < 0.0 {
                        -amax
                    } else {
                        amax
                    }
                }
                3 if i == block / 3 => 50.0 * amax,
                3 => r * amax,
                _ => r * 1e-6,
            });
        }
    }
    out
}

/// Quantizes `x` to `ty` and returns the bytes and their dequantization.
fn quantize(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut bytes, None).unwrap();
    let mut back = vec![0f32; x.len()];
    dequantize(ty, &bytes, &mut back).unwrap();
    (bytes, back)
}

#[test]
fn simd_kernels_match_scalar_on_random_and_extreme_rows() {
    let scalar = scalar_table();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let shapes: [&[u8]; 5] = [&[0], &[1], &[2], &[0, 1, 2, 3, 4], &[2, 1]];
    let mut cases = 0;
    for table in simd_tables() {
        for ty in simd_types(table) {
            let k = table.get(ty).unwrap();
            let s = scalar.get(ty).unwrap();
            let vdt = k.vec_dot_type;
            let block = ty.block_size();
            // Float rows (1-element blocks) also get lengths around ggml's 32-element steps.
            let long: &[usize] = if block == 1 {
                &[31, 32, 95, 515, 4099]
            } else {
                &[]
            };
            for &n_blocks in [1usize, 2, 3, 7, 16, 33].iter().chain(long) {
                let n = n_blocks * block;
                for (wi, w_shapes) in shapes.iter().enumerate() {
                    for a_shapes in [shapes[0], shapes[2], shapes[3]] {
                        let (w, wf) = quantize(ty, &row(&mut rng, n, block, w_shapes));
                        let (a, af) = quantize(vdt, &row(&mut rng, n, block, a_shapes));
                        let got = (k.vec_dot)(n, &w, &a);
                        let want = (s.vec_dot)(n, &w, &a);
                        let m = magnitude(ty, &wf, &af);
                        assert!(
                            agrees(got, want, m),
                            "{} {ty} n={n} weight shapes {wi}: simd {got:e}, scalar {want:e} \
                             (|terms| {m:e})",
                            table.isa()
                        );
                        if w_shapes == &[1] {
                            assert_eq!(got, 0.0, "{} {ty}: zero weights", table.isa());
                        }
                        // Misaligned copies: the same bits.
                        let mut wb = vec![0u8; w.len() + 1];
                        let mut ab = vec![0u8; a.len() + 3];
                        wb[1..].copy_from_slice(&w);
                        ab[3..].copy_from_slice(&a);
                        let shifted = (k.vec_dot)(n, &wb[1..], &ab[3..]);
                        assert_eq!(
                            got.to_bits(),
                            shifted.to_bits(),
                            "{} {ty} misaligned",
                            table.isa()
                        );
                        cases += 1;
                    }
                }
            }
            // Short rows: whole blocks present are used, nothing panics.
            let (w, _) = quantize(ty, &row(&mut rng, 4 * block, block, &[0]));
            let (a, _) = quantize(vdt, &row(&mut rng, 4 * block, block, &[0]));
            let _ = (k.vec_dot)(4 * block, &w[..w.len() / 2 + 1], &a[..a.len() - 1]);
            let _ = (k.vec_dot)(4 * block, &[], &a);
            assert_eq!((k.vec_dot)(0, &w, &a), 0.0, "{ty}: n = 0");
        }
    }
    if Isa::Avx2.is_available() || Isa::Neon.is_available() {
        assert!(cases > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Timing (run explicitly, in release; prints, asserts nothing about speed).

#[test]
#[ignore = "timing: run with --release --ignored --nocapture"]
fn time_per_row() {
    time_rows(4096, &[]);
    // SmolLM2-135M's hidden size (its Q8_0 output head has 49152 such rows) and Gemma 3
    // 270M's (not a multiple of 256: those tensors are Q5_0/Q8_0).
    let legacy = [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q5_0];
    time_rows(576, &legacy);
    time_rows(640, &legacy);
}

/// Prints single-thread ns per `n`-element row of each type in `only` (every type if empty).
fn time_rows(n: usize, only: &[GgmlType]) {
    use std::time::Instant;
    let mut rng = Rng(42);
    // The five types of the real models first, then the rest.
    let main = [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    let types: Vec<GgmlType> = main
        .into_iter()
        .chain(kernels::supported_types().filter(|t| !main.contains(t)))
        .filter(|t| only.is_empty() || only.contains(t))
        .collect();
    let tables: Vec<_> = Isa::ALL
        .into_iter()
        .filter_map(|isa| kernels::table(isa).ok())
        .collect();
    println!("ns per {n}-element row, single thread (best of 30 interleaved trials)");
    for ty in types {
        let vdt = scalar_table().get(ty).unwrap().vec_dot_type;
        let block = ty.block_size();
        let (w, _) = quantize(ty, &row(&mut rng, n, block, &[0]));
        let (a, _) = quantize(vdt, &row(&mut rng, n, block, &[0]));
        let mut best = vec![f64::MAX; tables.len()];
        // Interleave the tables so that load from other processes hits them alike.
        for _ in 0..30 {
            for (t, best) in tables.iter().zip(&mut best) {
                let k = t.get(ty).unwrap();
                let reps = if t.isa() == Isa::Scalar { 200 } else { 5_000 };
                let start = Instant::now();
                let mut sink = 0f32;
                for _ in 0..reps {
                    sink += (k.vec_dot)(n, std::hint::black_box(&w), std::hint::black_box(&a));
                }
                std::hint::black_box(sink);
                *best = best.min(start.elapsed().as_nanos() as f64 / reps as f64);
            }
        }
        let mut line = format!("{:>6}", ty.name());
        for (t, best) in tables.iter().zip(&best) {
            line += &format!("  {}({}) {best:8.1}", t.isa(), t.kernel_isa(ty).unwrap());
        }
        println!("{line}");
    }
}
