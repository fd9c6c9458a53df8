//! Bit-exactness against ggml: `../shared/golden/quant/<TYPE>/` holds ggml's own quantization,
//! dequantization and activation quantization of fixed inputs (see shared/README.md). Every
//! comparison here is on bytes; a missing golden folder is a failure, never a skip.

use ggml_compat::quant::{dequantize, quantize_row};
use ggml_compat::GgmlType;
use std::path::PathBuf;

fn golden_root() -> PathBuf {
    let root = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("golden/quant");
    assert!(
        root.is_dir(),
        "golden vectors not found at {} (set KILN_SHARED)",
        root.display()
    );
    root
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

struct Case {
    ty: GgmlType,
    dir: PathBuf,
    rows: usize,
    cols: usize,
    entry: serde_json::Value,
}

fn case(name: &str) -> Case {
    let root = golden_root();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(root.join("manifest.json"))).expect("manifest.json");
    let entry = manifest["types"][name].clone();
    assert!(entry.is_object(), "{name} missing from manifest.json");
    let ty = GgmlType::from_name(name).expect("known type");
    assert_eq!(
        entry["id"].as_u64(),
        Some(ty.id() as u64),
        "{name}: ggml id"
    );
    let cols = manifest["cols"].as_u64().unwrap() as usize;
    assert_eq!(
        entry["row_bytes"].as_u64(),
        ty.row_bytes(cols as u64),
        "{name}: row bytes"
    );
    Case {
        ty,
        dir: root.join(name),
        rows: manifest["rows"].as_u64().unwrap() as usize,
        cols,
        entry,
    }
}

/// Quantizes every row of `input` as `ty` and returns the concatenated bytes.
fn quantize_rows(ty: GgmlType, input: &[f32], cols: usize, imatrix: Option<&[f32]>) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut out = vec![0u8; input.len() / cols * row_bytes];
    for (src, dst) in input
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        quantize_row(ty, src, dst, imatrix).unwrap();
    }
    out
}

/// First differing byte, reported with its row and offset so a failure points at the block.
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8], row_bytes: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {n} bytes differ; first at row {} byte {} (got {:#04x}, ggml {:#04x})",
            i / row_bytes,
            i % row_bytes,
            got[i],
            want[i]
        );
    }
}

fn check(name: &str) {
    let c = case(name);
    let input = floats(&read(c.dir.join("input.f32")));
    assert_eq!(input.len(), c.rows * c.cols);
    let row_bytes = c.ty.row_bytes(c.cols as u64).unwrap() as usize;

    let quant = read(c.dir.join("quant.bin"));
    assert_same_bytes(
        &format!("{name} quant.bin"),
        &quantize_rows(c.ty, &input, c.cols, None),
        &quant,
        row_bytes,
    );

    if c.entry["imatrix"].as_bool() == Some(true) {
        let imatrix = floats(&read(c.dir.join("imatrix.f32")));
        let want = read(c.dir.join("quant_imatrix.bin"));
        let got = quantize_rows(c.ty, &input, c.cols, Some(&imatrix));
        assert_same_bytes(&format!("{name} quant_imatrix.bin"), &got, &want, row_bytes);
    }

    let dequant_path = c.dir.join("dequant.f32");
    if dequant_path.exists() {
        let mut got = vec![0f32; c.rows * c.cols];
        dequantize(c.ty, &quant, &mut got).unwrap();
        let got: Vec<u8> = got.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_same_bytes(
            &format!("{name} dequant.f32"),
            &got,
            &read(dequant_path),
            c.cols * 4,
        );
    }

    if let Some(act_name) = c.entry["vec_dot_type"].as_str() {
        let act_ty = GgmlType::from_name(act_name).expect("vec_dot_type");
        let act = floats(&read(c.dir.join("act.f32")));
        let want = read(c.dir.join("act_quant.bin"));
        let act_row = act_ty.row_bytes(c.cols as u64).unwrap() as usize;
        let got = quantize_rows(act_ty, &act, c.cols, None);
        assert_same_bytes(
            &format!("{name} act_quant.bin ({act_name})"),
            &got,
            &want,
            act_row,
        );
    }
}

macro_rules! golden {
    ($($fn_name:ident => $ty:literal),* $(,)?) => {
        $(#[test] fn $fn_name() { check($ty); })*

        /// The list above must cover the whole manifest.
        #[test]
        fn every_manifest_type_is_tested() {
            let manifest: serde_json::Value =
                serde_json::from_slice(&read(golden_root().join("manifest.json"))).unwrap();
            let tested = [$($ty),*];
            for name in manifest["types"].as_object().unwrap().keys() {
                assert!(tested.contains(&name.as_str()), "no golden test for {name}");
            }
        }
    };
}

golden! {
    f16 => "F16", bf16 => "BF16",
    q4_0 => "Q4_0", q4_1 => "Q4_1", q5_0 => "Q5_0", q5_1 => "Q5_1", q8_0 => "Q8_0", q8_1 => "Q8_1",
    q2_k => "Q2_K", q3_k => "Q3_K", q4_k => "Q4_K", q5_k => "Q5_K", q6_k => "Q6_K", q8_k => "Q8_K",
    iq4_nl => "IQ4_NL", iq4_xs => "IQ4_XS",
    tq1_0 => "TQ1_0", tq2_0 => "TQ2_0", mxfp4 => "MXFP4", q1_0 => "Q1_0", q2_0 => "Q2_0",
}
