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
