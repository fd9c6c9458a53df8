//! A tiny hand-made Gemma 3 folder (hidden 8, 2 heads of 4, 1 KV head, ffn 16, 1 layer,
//! vocab 8): what `convert_hf_to_gguf.py`'s Gemma3Model does to it (every norm weight + 1,
//! embedding rows past the vocabulary dropped, SentencePiece piece types mapped as
//! `_create_vocab_sentencepiece` does, added_tokens_decoder on top), and bad `tokenizer.model`
//! files: each an error naming the file, with no output file left.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use kiln::convert::hf_to_gguf::{convert_dir, ConvertParams};
use kiln::convert::recipe::Ftype;
use kiln::ggml_compat::gguf::{GgufFile, Value};
use sha2::{Digest, Sha256};

const CONFIG: &str = r#"{"architectures": ["Gemma3ForCausalLM"], "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "head_dim": 4, "max_position_embeddings": 32,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
  "sliding_window": 4, "final_logit_softcapping": null, "attn_logit_softcapping": null,
  "vocab_size": 8, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}"#;

const TOKENIZER_CONFIG: &str = r#"{"add_bos_token": true, "add_eos_token": false,
  "added_tokens_decoder": {"6": {"content": "<u>", "special": false},
                           "5": {"content": "<unused0>", "special": false}},
  "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
  "chat_template": "{{ bos_token }}"}"#;

/// HF name, shape; embed_tokens has 2 rows more than the vocabulary.
fn tensors() -> Vec<(String, Vec<u64>)> {
    let l = |s: &str| format!("model.layers.0.{s}.weight");
    vec![
        ("model.embed_tokens.weight".into(), vec![10, 8]),
        ("model.norm.weight".into(), vec![8]),
        (l("input_layernorm"), vec![8]),
        (l("self_attn.q_proj"), vec![8, 8]),
        (l("self_attn.k_proj"), vec![4, 8]),
        (l("self_attn.v_proj"), vec![4, 8]),
        (l("self_attn.o_proj"), vec![8, 8]),
        (l("self_attn.q_norm"), vec![4]),
        (l("self_attn.k_norm"), vec![4]),
        (l("post_attention_layernorm"), vec![8]),
        (l("pre_feedforward_layernorm"), vec![8]),
        (l("post_feedforward_layernorm"), vec![8]),
        (l("mlp.gate_proj"), vec![16, 8]),
        (l("mlp.up_proj"), vec![16, 8]),
        (l("mlp.down_proj"), vec![8, 16]),
    ]
}

/// Element `i` of every tensor (F32): distinct, exact in f16.
fn value(i: usize) -> f32 {
    (i % 64) as f32 * 0.125 - 2.0
}

fn write_safetensors(path: &Path) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in tensors() {
        let n = shape.iter().product::<u64>() as usize;
        let start = data.len();
        data.extend((0..n).flat_map(|i| value(i).to_le_bytes()));
        header.insert(
            name,
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(no: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(no << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend(data);
}

/// A ModelProto with pieces of every type (264, more than vocab_size: the rest is dropped)
/// and a trainer spec (BPE with byte fallback, so sentencepiece itself loads it too).
fn tokenizer_model() -> Vec<u8> {
    let mut pieces: Vec<(String, f32, u64)> = [
        ("<pad>", 0.0, 3),
        ("<eos>", 0.0, 3),
        ("<bos>", 0.0, 3),
        ("<unk>", 0.0, 2),
        ("\u{2581}a", -1.0, 1),
        ("<unused0>", 0.0, 5),
        ("<u>", 0.0, 4),
    ]
    .map(|(t, s, ty)| (t.to_string(), s, ty))
    .to_vec();
    pieces.extend((0..256).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    pieces.push(("\u{2581}b".into(), -2.0, 1));
    let mut out = Vec::new();
    for (text, score, ty) in &pieces {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        p.push(0x15);
        p.extend(score.to_le_bytes());
        if *ty != 1 {
            p.push(0x18);
            varint(*ty, &mut p);
        }
        bytes_field(1, &p, &mut out);
    }
    bytes_field(2, &[0x18, 0x02, 0x98, 0x02, 0x01], &mut out); // model_type BPE, byte_fallback
    out
}

fn folder(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("convert-gemma3-tiny")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    std::fs::write(d.join("tokenizer_config.json"), TOKENIZER_CONFIG).unwrap();
    std::fs::write(d.join("tokenizer.model"), tokenizer_model()).unwrap();
    write_safetensors(&d.join("model.safetensors"));
    d
}

fn convert(dir: &Path) -> (PathBuf, Result<(), String>) {
    let out = dir.with_extension("gguf");
    let _ = std::fs::remove_file(&out);
    let r = convert_dir(
        dir,
        &out,
        &ConvertParams {
            outtype: Ftype::F16,
            threads: 1,
        },
        &ProgressBar::hidden(),
    );
    (out, r.map(|_| ()).map_err(|e| e.to_string()))
}

fn f32_data(g: &GgufFile, name: &str) -> Vec<f32> {
    let t = g.tensors().iter().find(|t| t.name == name).unwrap();
    g.tensor_data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn norms_shift_vocab_rows_and_piece_types() {
    let dir = folder("ok");
    let (out, r) = convert(&dir);
    r.unwrap();
    // llama.cpp's convert_hf_to_gguf.py wrote exactly this file from the same folder
    let sha = Sha256::digest(std::fs::read(&out).unwrap());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "f8a2b2a3ca5cdecf783332228f91db2f5ce5bf0c97444eef18692f999e06bbb5"
    );
    let g = GgufFile::open(&out).unwrap();
    // every norm weight + 1 (F32), nothing else touched
    for name in [
        "output_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_q_norm.weight",
        "blk.0.attn_k_norm.weight",
        "blk.0.post_attention_norm.weight",
        "blk.0.ffn_norm.weight",
        "blk.0.post_ffw_norm.weight",
    ] {
        let d = f32_data(&g, name);
        let want: Vec<f32> = (0..d.len()).map(|i| value(i) + 1.0).collect();
        assert_eq!(d, want, "{name}");
    }
    // the embedding keeps the first vocab_size rows, as F16
    let emb = g
        .tensors()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(emb.dims, [8, 8]);
    let e: Vec<f32> = g
        .tensor_data(emb)
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(e, (0..64).map(value).collect::<Vec<_>>());
    assert!(!g.tensors().iter().any(|t| t.name == "output.weight"));

    let strings = |k: &str| -> Vec<String> {
        g.get(k)
            .unwrap()
            .as_array()
            .unwrap()
            .strings()
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect()
    };
    let ints = |k: &str| g.get(k).unwrap().as_array().unwrap().i64s().unwrap();
    assert_eq!(
        strings("tokenizer.ggml.tokens"),
        [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "\u{2581}a",
            "<unused0>",
            "<u>",
            "<0x00>"
        ]
    );
    // UNKNOWN 2, CONTROL 3, BYTE 6; "<unused0>" looks special → CONTROL; "<u>" is a
    // non-special added token → USER_DEFINED 4
    assert_eq!(ints("tokenizer.ggml.token_type"), [3, 3, 3, 2, 1, 3, 4, 6]);
    assert_eq!(
        g.get("tokenizer.ggml.scores")
            .unwrap()
            .as_array()
            .unwrap()
            .f32s()
            .unwrap(),
        [0.0, 0.0, 0.0, 0.0, -1.0, -1000.0, -1000.0, 0.0]
    );
    let md: Vec<(&str, String)> = g
        .header()
        .metadata
        .iter()
        .filter(|(k, _)| {
            k.starts_with("tokenizer.")
                && !matches!(
                    k.as_str(),
                    "tokenizer.ggml.tokens" | "tokenizer.ggml.scores" | "tokenizer.ggml.token_type"
                )
        })
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    let s = |v: Value| v.to_string();
    assert_eq!(
        md,
        [
            ("tokenizer.ggml.model", s(Value::String("llama".into()))),
            ("tokenizer.ggml.pre", s(Value::String("default".into()))),
            // no tokenizer.json: the ids come from config.json
            ("tokenizer.ggml.bos_token_id", s(Value::U32(2))),
            ("tokenizer.ggml.eos_token_id", s(Value::U32(1))),
            ("tokenizer.ggml.padding_token_id", s(Value::U32(0))),
            ("tokenizer.ggml.add_bos_token", s(Value::Bool(true))),
            ("tokenizer.ggml.add_eos_token", s(Value::Bool(false))),
            (
                "tokenizer.chat_template",
                s(Value::String("{{ bos_token }}".into()))
            ),
            ("tokenizer.ggml.add_space_prefix", s(Value::Bool(false))),
        ]
    );
    let _ = std::fs::remove_file(&out);
}

fn bad_tokenizer(name: &str, bytes: Option<Vec<u8>>, want: &[&str]) {
    let dir = folder(name);
    let path = dir.join("tokenizer.model");
    match bytes {
        Some(b) => std::fs::write(&path, b).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
    let (out, r) = convert(&dir);
    let e = r.expect_err("a bad tokenizer.model must fail");
    assert!(e.contains(dir.to_str().unwrap()), "{e}");
    assert!(e.contains("tokenizer.model"), "{e}");
    for w in want {
        assert!(e.contains(w), "want {w:?} in: {e}");
    }
    assert!(!out.exists(), "{} left behind", out.display());
    let tmp_left = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .any(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.gguf"))
        });
    assert!(!tmp_left, "a temporary output file was left behind");
}

#[test]
fn truncated_tokenizer_model_is_an_error() {
    let m = tokenizer_model();
    bad_tokenizer(
        "truncated",
        Some(m[..m.len() / 2].to_vec()),
        &["not a valid SentencePiece model", "runs past the end"],
    );
}

#[test]
fn garbled_tokenizer_model_is_an_error() {
    // a piece type outside the enum, then bytes that are not protobuf at all
    let mut m = tokenizer_model();
    let at = m.iter().position(|&b| b == 0x18).unwrap();
    m[at + 1] = 0x09;
    bad_tokenizer("garbled-type", Some(m), &["unknown piece type 9"]);
    bad_tokenizer(
        "garbled",
        Some(b"\x0f\x0f\x0f garbage".to_vec()),
        &["not a valid SentencePiece model", "wire type"],
    );
    bad_tokenizer(
        "empty",
        Some(Vec::new()),
        &["not a valid SentencePiece model", "no pieces"],
    );
}

#[test]
fn missing_tokenizer_model_is_an_error() {
    bad_tokenizer("missing", None, &["no tokenizer.model"]);
}
