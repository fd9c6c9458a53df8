//! Acceptance: `kiln quantize` of kiln's F16 conversion (itself checked against
//! `hf-to-gguf.json` first) to every type of `quantize-from-f16.json` gives llama-quantize's
//! type and data sha256 for every tensor, in its order, with its metadata. One test per type.

mod convert_common;

use indicatif::ProgressBar;
use kiln::convert::quantize::{quantize_file, QuantizeParams};
use kiln::convert::recipe::Ftype;
use kiln::ggml_compat::GgmlType;

use convert_common::{compare, f16_file, golden, work_dir};

fn check(ftype: &str, overrides: &[(&str, GgmlType)], entry: &str) {
    let input = f16_file();
    let out = work_dir().join(format!("{entry}.kiln"));
    let params = QuantizeParams {
        ftype: Ftype::from_name(ftype).unwrap(),
        overrides: overrides.iter().map(|(p, t)| (p.to_string(), *t)).collect(),
        pure: false,
        allow_requantize: false,
        imatrix: None,
        threads: 2,
        replacements: Default::default(),
    };
    quantize_file(input, &out, &params, &ProgressBar::hidden())
        .unwrap_or_else(|e| panic!("kiln quantize {ftype}: {e}"));
    let bad = compare(&golden("quantize-from-f16.json"), entry, &out);
    let _ = std::fs::remove_file(&out);
    assert!(
        bad.is_empty(),
        "{ftype}: {} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

macro_rules! golden_type {
    ($($test:ident: $ftype:literal,)*) => {$(
        #[test]
        fn $test() {
            check($ftype, &[], concat!("smollm2-hf-quant-", $ftype, ".gguf"));
        }
    )*};
}

golden_type! {
    q8_0: "Q8_0",
    q4_0: "Q4_0",
    q4_1: "Q4_1",
    q5_0: "Q5_0",
    q5_1: "Q5_1",
    q2_k: "Q2_K",
    q3_k_m: "Q3_K_M",
    q4_k_s: "Q4_K_S",
    q4_k_m: "Q4_K_M",
    q5_k_m: "Q5_K_M",
    q6_k: "Q6_K",
    iq4_nl: "IQ4_NL",
    tq1_0: "TQ1_0",
    tq2_0: "TQ2_0",
    q2_0: "Q2_0",
}

#[test]
fn q4_0_with_ffn_down_q1_0_override() {
    check(
        "Q4_0",
        &[("ffn_down", GgmlType::Q1_0)],
        "smollm2-hf-quant-Q4_0-ffn_down-Q1_0.gguf",
    );
}

#[test]
fn requantizing_needs_the_flag() {
    let input = f16_file();
    let q = work_dir().join("requant-src.gguf");
    let mut params = QuantizeParams {
        ftype: Ftype::Q8_0,
        overrides: Vec::new(),
        pure: false,
        allow_requantize: false,
        imatrix: None,
        threads: 2,
        replacements: Default::default(),
    };
    quantize_file(input, &q, &params, &ProgressBar::hidden()).unwrap();
    params.ftype = Ftype::Q4_0;
    let out = work_dir().join("requant-out.gguf");
    let e = quantize_file(&q, &out, &params, &ProgressBar::hidden()).unwrap_err();
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    assert!(!out.exists() && !work_dir().join("requant-out.gguf.tmp").exists());
    params.allow_requantize = true;
    quantize_file(&q, &out, &params, &ProgressBar::hidden()).unwrap();
    assert!(out.is_file());
    let _ = std::fs::remove_file(&q);
    let _ = std::fs::remove_file(&out);
}

/// The comparison itself can fail: the F16 file is not the BF16 golden.
#[test]
fn comparison_detects_a_different_file() {
    let bad = compare(
        &golden("hf-to-gguf.json"),
        "smollm2-hf-bf16.gguf",
        f16_file(),
    );
    assert!(
        bad.iter().any(|b| b.contains("general.file_type")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.starts_with("tensor token_embd.weight F16")),
        "{bad:?}"
    );
}

/// An importance matrix (llama-imatrix's GGUF layout) reaches the quantizer: the weighted
/// tensor equals ggml-compat's importance-weighted quantization (bit-exact with ggml, tested in
/// ggml-compat), the recipe sees `has_imatrix`, and the tool's `quantize.imatrix.*` keys follow
/// `general.file_type`.
#[test]
fn imatrix_weights_reach_the_quantizer() {
    use kiln::convert::imatrix;
    use kiln::convert::quantize::quantize_rows;
    use kiln::ggml_compat::gguf::{Array, GgufFile, GgufWriter, TensorInfoOut, Value, ValueType};

    let name = "blk.0.ffn_down.weight";
    let ncols = 1536usize;
    let sums: Vec<f32> = (0..ncols).map(|i| 1.0 + (i % 7) as f32 * 3.0).collect();
    let count = 4.0f32;
    let im_path = work_dir().join("test.imatrix.gguf");
    let md = vec![
        (
            "imatrix.datasets".to_string(),
            Value::Array(Array {
                elem: ValueType::String,
                values: vec![Value::String("wiki.valid.raw".into())],
            }),
        ),
        ("imatrix.chunk_count".to_string(), Value::U32(10)),
        ("imatrix.chunk_size".to_string(), Value::U32(512)),
    ];
    let infos = [
        TensorInfoOut {
            name: format!("{name}.in_sum2"),
            ty: GgmlType::F32,
            dims: vec![ncols as u64, 1],
        },
        TensorInfoOut {
            name: format!("{name}.counts"),
            ty: GgmlType::F32,
            dims: vec![1, 1],
        },
    ];
    let mut w = GgufWriter::create(&im_path, 3, 32, &md, &infos).unwrap();
    let bytes: Vec<u8> = sums.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.write_tensor_data(&infos[0].name, &bytes).unwrap();
    w.write_tensor_data(&infos[1].name, &count.to_le_bytes())
        .unwrap();
    w.finish().unwrap();

    let im = imatrix::load(&im_path).unwrap();
    let weights: Vec<f32> = sums.iter().map(|s| s / count).collect();
    assert_eq!(im.data[name], weights);

    let out = work_dir().join("imatrix-out.gguf");
    let params = QuantizeParams {
        ftype: Ftype::IQ4_NL,
        overrides: Vec::new(),
        pure: false,
        allow_requantize: false,
        imatrix: Some((im, "test.imatrix.gguf".into())),
        threads: 2,
        replacements: Default::default(),
    };
    quantize_file(f16_file(), &out, &params, &ProgressBar::hidden()).unwrap();

    let src = GgufFile::open(f16_file()).unwrap();
    let t = src.tensor(name).unwrap();
    let mut f32s = vec![0.0f32; t.n_elements() as usize];
    kiln::ggml_compat::quant::dequantize(GgmlType::F16, src.tensor_data(t), &mut f32s).unwrap();
    let want = quantize_rows(GgmlType::IQ4_NL, &f32s, ncols, 576, Some(&weights), 1).unwrap();
    let unweighted = quantize_rows(GgmlType::IQ4_NL, &f32s, ncols, 576, None, 1).unwrap();
    assert_ne!(want, unweighted, "the weights must change the result");

    let g = GgufFile::open(&out).unwrap();
    let q = g.tensor(name).unwrap();
    // without an imatrix the first eighth of ffn_down gets Q5_K (golden); with one, IQ4_NL
    assert_eq!(q.ty, GgmlType::IQ4_NL);
    assert!(g.tensor_data(q) == &want[..], "weighted bytes differ");
    let keys: Vec<&str> = g
        .header()
        .metadata
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        keys[keys.len() - 5..],
        [
            "general.file_type",
            "quantize.imatrix.file",
            "quantize.imatrix.dataset",
            "quantize.imatrix.entries_count",
            "quantize.imatrix.chunks_count"
        ]
    );
    assert_eq!(
        g.get("quantize.imatrix.entries_count"),
        Some(&Value::U32(1))
    );
    let _ = std::fs::remove_file(&out);
}
