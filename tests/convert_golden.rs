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

/// A tiny Qwen checkpoint (hidden 8, 2 heads of 4, 1 KV head, ffn 16, 1 layer) with the SmolLM2
/// tokenizer files; every value distinct so a permutation would show.
fn tiny_qwen(arch: &str, extra: &[(&str, Vec<u64>)]) -> std::path::PathBuf {
    let d = convert_common::work_dir().join(format!("tiny-{arch}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(convert_common::hf_dir().join(f), d.join(f)).unwrap();
    }
    let config = format!(
        r#"{{"architectures": ["{arch}"], "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "vocab_size": 49152, "tie_word_embeddings": true}}"#
    );
    std::fs::write(d.join("config.json"), config).unwrap();
    let l = |s: &str| format!("model.layers.0.{s}");
    let mut t: Vec<(String, Vec<u64>)> = vec![
        ("model.embed_tokens.weight".into(), vec![49152, 8]),
        ("model.norm.weight".into(), vec![8]),
        (l("input_layernorm.weight"), vec![8]),
        (l("post_attention_layernorm.weight"), vec![8]),
        (l("self_attn.q_proj.weight"), vec![8, 8]),
        (l("self_attn.k_proj.weight"), vec![4, 8]),
        (l("self_attn.v_proj.weight"), vec![4, 8]),
        (l("self_attn.o_proj.weight"), vec![8, 8]),
        (l("mlp.gate_proj.weight"), vec![16, 8]),
        (l("mlp.up_proj.weight"), vec![16, 8]),
        (l("mlp.down_proj.weight"), vec![8, 16]),
    ];
    t.extend(extra.iter().map(|(n, s)| (l(n), s.clone())));
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape) in &t {
        let n: u64 = shape.iter().product();
        let start = data.len();
        for i in 0..n {
            data.extend((i as f32 * 0.001 + 0.5).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    d
}

fn convert_tiny(dir: &std::path::Path) -> kiln::ggml_compat::gguf::GgufFile {
    use kiln::convert::hf_to_gguf::{convert_dir, ConvertParams};
    let out = dir.join("out.gguf");
    let params = ConvertParams {
        outtype: kiln::convert::recipe::Ftype::F16,
        threads: 1,
    };
    convert_dir(dir, &out, &params, &indicatif::ProgressBar::hidden()).unwrap();
    kiln::ggml_compat::gguf::GgufFile::open(&out).unwrap()
}

/// `attn_q` of a Qwen model is not permuted: its F16 rows are the input rows.
fn assert_unpermuted_q(g: &kiln::ggml_compat::gguf::GgufFile) {
    let q = g.tensor("blk.0.attn_q.weight").expect("attn_q");
    let want: Vec<u8> = (0..64)
        .flat_map(|i| half::f16::from_f32(i as f32 * 0.001 + 0.5).to_le_bytes())
        .collect();
    assert_eq!(g.tensor_data(q), &want[..]);
}

#[test]
fn qwen3_mapping() {
    let d = tiny_qwen(
        "Qwen3ForCausalLM",
        &[
            ("self_attn.q_norm.weight", vec![4]),
            ("self_attn.k_norm.weight", vec![4]),
        ],
    );
    let g = convert_tiny(&d);
    assert_eq!(
        g.get("general.architecture").and_then(|v| v.as_str()),
        Some("qwen3")
    );
    assert!(g.get("qwen3.attention.key_length").is_some());
    assert!(g.get("qwen3.vocab_size").is_none(), "llama-only key");
    let mut names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    let want = [
        "blk.0.attn_k.weight",
        "blk.0.attn_k_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_output.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_q_norm.weight",
        "blk.0.attn_v.weight",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_norm.weight",
        "blk.0.ffn_up.weight",
        "output_norm.weight",
        "token_embd.weight",
    ];
    assert_eq!(names, want);
    let qn = g.tensor("blk.0.attn_q_norm.weight").unwrap();
    assert_eq!(qn.ty, kiln::ggml_compat::GgmlType::F32);
    assert_unpermuted_q(&g);
}

#[test]
fn qwen2_mapping_has_qkv_biases() {
    let d = tiny_qwen(
        "Qwen2ForCausalLM",
        &[
            ("self_attn.q_proj.bias", vec![8]),
            ("self_attn.k_proj.bias", vec![4]),
            ("self_attn.v_proj.bias", vec![4]),
        ],
    );
    let g = convert_tiny(&d);
    assert_eq!(
        g.get("general.architecture").and_then(|v| v.as_str()),
        Some("qwen2")
    );
    for b in ["attn_q", "attn_k", "attn_v"] {
        let t = g
            .tensor(&format!("blk.0.{b}.bias"))
            .unwrap_or_else(|| panic!("{b}.bias"));
        assert_eq!(t.ty, kiln::ggml_compat::GgmlType::F32);
    }
    assert_unpermuted_q(&g);
}

/// The converted model runs, and greedily continues every golden prompt as llama.cpp continued
/// it on the original Q4_1 file — for the first 32 tokens, the bar issue #3 sets. The F16 file
/// holds the dequantized Q4_1 weights (through bf16), so later tokens may legitimately part ways.
#[test]
fn converted_f16_continues_the_golden_prompts_like_the_original() {
    use kiln::model::Model;
    use kiln::tokenizer::Tokenizer;
    const TOKENS: usize = 32;
    let path = convert_common::f16_file();
    let model = Model::load(path, 2).expect("load the converted F16 file");
    let tok = Tokenizer::from_gguf(&model.file).expect("its tokenizer");
    let golden_path =
        convert_common::root().join("../shared/golden/models/smollm2-135m-instruct-q4_1.json");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&golden_path).unwrap()).unwrap();
    for p in golden["prompts"].as_array().unwrap() {
        let prompt = p["prompt"].as_str().unwrap();
        let ids = tok.encode(prompt, true, true);
        let want_ids: Vec<u32> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "prompt ids of {prompt:?}");
        // llama.cpp stopped early where it produced an end-of-generation token.
        let greedy = p["greedy_ids"].as_array().unwrap();
        let want: Vec<u32> = greedy[..TOKENS.min(greedy.len())]
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                .0 as u32
        };
        let mut state = model.new_state(ids.len() + TOKENS + 1);
        let mut next = argmax(&model.forward_last(&mut state, &ids).unwrap());
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(next);
            next = argmax(&model.forward_last(&mut state, &[next]).unwrap());
        }
        assert_eq!(
            got, want,
            "greedy continuation of {prompt:?} on the converted file"
        );
    }
}
