//! The scalar kernels against ggml's own dot products: `../shared/golden/quant/<TYPE>/` holds
//! 6 weight rows (`quant.bin`), 6 activation rows quantized to the type's vec_dot_type
//! (`act_quant.bin`) and ggml's CPU `vec_dot` of every pair (`vec_dot.f32`). These tests read
//! only those bytes, never kiln's quantizers. A missing golden folder is a failure, not a skip.
//!
//! Orientation: `vec_dot.f32` is row-major `[i][j]` with `i` the weight row and `j` the
//! activation row, i.e. `vec_dot.f32[6*i + j] = vec_dot(quant row i, act_quant row j)`.
//! `orientation_is_weight_row_major` checks this from the data: the transposed reading fails.

mod common;

use common::{floats, golden_root, read};
use ggml_compat::GgmlType;
use kiln::kernels::{kernels, supported_types};

/// One type's golden vec_dot data.
struct Golden {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    quant: Vec<u8>,
    act_quant: Vec<u8>,
    /// ggml's dequantization of `quant` and the activations before quantization: used only to
    /// size the tolerance floor.
    dequant: Vec<f32>,
    act: Vec<f32>,
    vec_dot: Vec<f32>,
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&read(golden_root().join("manifest.json"))).expect("manifest.json")
}

/// Types whose golden folder has `vec_dot.f32`.
fn golden_types() -> Vec<String> {
    let m = manifest();
    let root = golden_root();
    let mut names: Vec<String> = m["types"]
        .as_object()
        .expect("manifest types")
        .keys()
        .filter(|name| root.join(name).join("vec_dot.f32").is_file())
        .cloned()
        .collect();
    names.sort();
    names
}

fn golden(name: &str) -> Golden {
    let m = manifest();
    let entry = &m["types"][name];
    assert!(entry.is_object(), "{name} missing from manifest.json");
    let ty = GgmlType::from_name(name).expect("known type");
    let rows = m["rows"].as_u64().unwrap() as usize;
    let cols = m["cols"].as_u64().unwrap() as usize;
    let k = kernels(ty).unwrap_or_else(|| panic!("{name}: no kernels"));
    assert_eq!(
        entry["vec_dot_type"].as_str(),
        Some(k.vec_dot_type.name()),
        "{name}: vec_dot_type"
    );
    let dir = golden_root().join(name);
    let g = Golden {
        ty,
        rows,
        cols,
        quant: read(dir.join("quant.bin")),
        act_quant: read(dir.join("act_quant.bin")),
        dequant: floats(&read(dir.join("dequant.f32"))),
        act: floats(&read(dir.join("act.f32"))),
        vec_dot: floats(&read(dir.join("vec_dot.f32"))),
    };
    let w_row = ty.row_bytes(cols as u64).unwrap() as usize;
    let a_row = k.vec_dot_type.row_bytes(cols as u64).unwrap() as usize;
    assert_eq!(g.quant.len(), rows * w_row, "{name}: quant.bin size");
    assert_eq!(
        g.act_quant.len(),
        rows * a_row,
        "{name}: act_quant.bin size"
    );
    assert_eq!(g.dequant.len(), rows * cols, "{name}: dequant.f32 size");
    assert_eq!(g.act.len(), rows * cols, "{name}: act.f32 size");
    assert_eq!(g.vec_dot.len(), rows * rows, "{name}: vec_dot.f32 size");
    g
}

impl Golden {
    fn dot(&self, i: usize, j: usize) -> f32 {
        let k = kernels(self.ty).unwrap();
        let w_row = self.ty.row_bytes(self.cols as u64).unwrap() as usize;
        let a_row = k.vec_dot_type.row_bytes(self.cols as u64).unwrap() as usize;
        (k.vec_dot)(
            self.cols,
            &self.quant[i * w_row..(i + 1) * w_row],
            &self.act_quant[j * a_row..(j + 1) * a_row],
        )
    }

    /// `sum_k max|w in k's block| * |a_k|` over weight row `i` and activation row `j`: a bound
    /// on the float terms any implementation forms (see [`Golden::agrees`]).
    fn magnitude(&self, i: usize, j: usize) -> f64 {
        let w = &self.dequant[i * self.cols..(i + 1) * self.cols];
        let a = &self.act[j * self.cols..(j + 1) * self.cols];
        let block = self.ty.block_size();
        w.chunks(block)
            .zip(a.chunks(block))
            .map(|(wb, ab)| {
                let wmax = wb.iter().fold(0f64, |m, w| m.max(w.abs() as f64));
                wmax * ab.iter().map(|a| a.abs() as f64).sum::<f64>()
            })
            .sum()
    }

    /// Whether `got` agrees with ggml's `want` for the pair (i, j): within 1e-5 relative, or
    /// within a floor of 4 ulps of [`Golden::magnitude`] for results near 0.
    ///
    /// The integer sums inside each block are exact in both implementations; only the float
    /// combination differs (ggml's SIMD code keeps partial sums per lane, uses FMA, and may
    /// split a block into larger terms that cancel: the AVX2 TQ2_0 kernel sums `(q+1)*y` and
    /// subtracts `sum(y)` afterwards, so its terms are `d * |y|`, not `|w*y|`). Each of those
    /// roundings is relative to a term, and no term exceeds the block's largest weight times
    /// its activations; the sum of those bounds is `magnitude`. When the terms cancel (results
    /// near 0, e.g. Q5_0 [i][j] with |terms|/|result| ~ 1e5) a pure relative test is meaningless.
    /// Measured on these vectors, the largest difference is 0.5 ulp of `magnitude` (F16) and
    /// at most 0.2 ulp for every quantized type; a single wrong quant in one element moves a
    /// result by about 1/(levels * 512) of `magnitude` (>= 1.5e-5, i.e. > 100 ulps, for 8 bits),
    /// so 4 ulps leaves room for rounding and none for a wrong integer.
    fn agrees(&self, i: usize, j: usize, got: f32, want: f32) -> bool {
        let floor = 4.0 * f32::EPSILON as f64 * self.magnitude(i, j);
        let tol = (1e-5 * want.abs() as f64).max(floor);
        ((got as f64) - (want as f64)).abs() <= tol
    }
}

fn check(name: &str) {
    let g = golden(name);
    let mut failures = Vec::new();
    for i in 0..g.rows {
        for j in 0..g.rows {
            let got = g.dot(i, j);
            let want = g.vec_dot[i * g.rows + j];
            if !g.agrees(i, j, got, want) {
                failures.push(format!(
                    "[{i}][{j}] got {got:e}, ggml {want:e} (|terms| {:e})",
                    g.magnitude(i, j)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

/// Every type with a golden `vec_dot.f32` has a kernel, and every kernel has golden data
/// (except F32, for which ggml's golden set has no folder).
#[test]
fn every_golden_type_has_a_kernel_and_back() {
    let names = golden_types();
    assert!(
        names.len() >= 19,
        "only {} golden types: {names:?}",
        names.len()
    );
    for name in &names {
        let ty = GgmlType::from_name(name).unwrap();
        assert!(
            kernels(ty).is_some(),
            "{name} has golden vec_dot but no kernel"
        );
    }
    for ty in supported_types() {
        assert!(
            ty == GgmlType::F32 || names.iter().any(|n| n == ty.name()),
            "{ty} has a kernel but no golden vec_dot"
        );
    }
}

/// The transposed reading `[j][i]` disagrees with our dot products for at least one pair of
/// every type whose matrix is not symmetric: the file is `[weight row][activation row]`.
#[test]
fn orientation_is_weight_row_major() {
    for name in golden_types() {
        let g = golden(&name);
        let mut transposed_ok = true;
        let mut direct_ok = true;
        let mut symmetric = true;
        for i in 0..g.rows {
            for j in 0..g.rows {
                let got = g.dot(i, j);
                direct_ok &= g.agrees(i, j, got, g.vec_dot[i * g.rows + j]);
                transposed_ok &= g.agrees(i, j, got, g.vec_dot[j * g.rows + i]);
                symmetric &= g.vec_dot[i * g.rows + j] == g.vec_dot[j * g.rows + i];
            }
        }
        assert!(direct_ok, "{name}: [i][j] reading does not match");
        assert!(
            symmetric || !transposed_ok,
            "{name}: [j][i] reading matches too"
        );
    }
}

macro_rules! golden_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { check($name); })*
    };
}

golden_tests!(
    f16 => "F16",
    bf16 => "BF16",
    q4_0 => "Q4_0",
    q4_1 => "Q4_1",
    q5_0 => "Q5_0",
    q5_1 => "Q5_1",
    q8_0 => "Q8_0",
    q2_k => "Q2_K",
    q3_k => "Q3_K",
    q4_k => "Q4_K",
    q5_k => "Q5_K",
    q6_k => "Q6_K",
    iq4_nl => "IQ4_NL",
    iq4_xs => "IQ4_XS",
    tq1_0 => "TQ1_0",
    tq2_0 => "TQ2_0",
    mxfp4 => "MXFP4",
    q1_0 => "Q1_0",
    q2_0 => "Q2_0",
);
