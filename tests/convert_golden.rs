//! Acceptance: `kiln convert` of the folder `../shared/tools/gguf_to_hf.py` makes from
//! SmolLM2-135M-Instruct to f16, bf16 and q8_0 gives, for every tensor, the name, type, shape
//! and data sha256 of llama.cpp's `convert_hf_to_gguf.py` (`hf-to-gguf.json`), and the same
//! metadata keys (in order) and values. Also: `--outtype q4_k_m` equals converting to f16 and
//! running llama-quantize (`quantize-from-f16.json`).

mod convert_common;

use convert_common::{compare, convert, golden};

fn check(outtype: &str, golden_file: &str, entry: &str) {
    let out = convert(outtype);
    let bad = compare(&golden(golden_file), entry, &out);
    let _ = std::fs::remove_file(&out);
    assert!(
        bad.is_empty(),
        "{outtype}: {} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn f16_matches_convert_hf_to_gguf() {
    check("f16", "hf-to-gguf.json", "smollm2-hf-f16.gguf");
}

#[test]
fn bf16_matches_convert_hf_to_gguf() {
    check("bf16", "hf-to-gguf.json", "smollm2-hf-bf16.gguf");
}

#[test]
fn q8_0_matches_convert_hf_to_gguf() {
    check("q8_0", "hf-to-gguf.json", "smollm2-hf-q8_0.gguf");
}

#[test]
fn q4_k_m_matches_f16_then_llama_quantize() {
    check(
        "q4_k_m",
        "quantize-from-f16.json",
        "smollm2-hf-quant-Q4_K_M.gguf",
    );
}
