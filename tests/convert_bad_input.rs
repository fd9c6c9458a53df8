//! Bad Hugging Face folders: each gives an error that names the problem and the file or
//! tensor, and leaves neither OUT nor OUT.tmp behind.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use kiln::convert::hf_to_gguf::{convert_dir, ConvertParams};
use kiln::convert::recipe::Ftype;

/// A tiny llama: hidden 8, 2 heads of 4 (1 KV head), ffn 16, 1 layer, vocab 16, tied.
const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "head_dim": 4, "max_position_embeddings": 32,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 16, "tie_word_embeddings": true}"#;

fn tensors() -> Vec<(String, Vec<u64>)> {
    let l = |s: &str| format!("model.layers.0.{s}.weight");
    vec![
        ("model.embed_tokens.weight".into(), vec![16, 8]),
        ("model.norm.weight".into(), vec![8]),
        (l("input_layernorm"), vec![8]),
        (l("post_attention_layernorm"), vec![8]),
        (l("self_attn.q_proj"), vec![8, 8]),
        (l("self_attn.k_proj"), vec![4, 8]),
        (l("self_attn.v_proj"), vec![4, 8]),
        (l("self_attn.o_proj"), vec![8, 8]),
        (l("mlp.gate_proj"), vec![16, 8]),
        (l("mlp.up_proj"), vec![16, 8]),
        (l("mlp.down_proj"), vec![8, 16]),
    ]
}

/// Write a safetensors file of `tensors` (all `dtype`, 2-byte elements unless F32).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<u64>)], dtype: &str) {
    let esize = if dtype == "F32" { 4 } else { 2 };
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    for (name, shape) in tensors {
        let n: u64 = shape.iter().product::<u64>() * esize;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(std::iter::repeat_n(0x3cu8, off as usize));
    std::fs::write(path, bytes).unwrap();
}

fn folder(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("convert-bad")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    d
}

/// Convert `dir`; the error text, after checking no output was left.
fn convert_err(dir: &Path) -> String {
    let out = dir.join("out.gguf");
    let r = convert_dir(
        dir,
        &out,
        &ConvertParams {
            outtype: Ftype::F16,
            threads: 1,
        },
        &ProgressBar::hidden(),
    );
    assert!(!out.exists(), "{} left behind", out.display());
    assert!(
        !dir.join("out.gguf.tmp").exists(),
        "temporary file left behind"
    );
    r.expect_err("conversion should fail").to_string()
}

#[test]
fn truncated_safetensors() {
    let d = folder("truncated");
    let st = d.join("model.safetensors");
    write_safetensors(&st, &tensors(), "BF16");
    let len = std::fs::metadata(&st).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len - 100).unwrap();
    let e = convert_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // a header cut short is reported too
    f.set_len(20).unwrap();
    let e = convert_err(&d);
    assert!(e.contains("header") && e.contains("truncated"), "{e}");
}

#[test]
fn shape_disagreeing_with_config() {
    let d = folder("shape");
    let mut t = tensors();
    t[4].1 = vec![12, 8]; // q_proj: config.json implies 2 heads × 4 = 8 rows
    write_safetensors(&d.join("model.safetensors"), &t, "BF16");
    let e = convert_err(&d);
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.weight")
            && e.contains("[12, 8]")
            && e.contains("[8, 8]"),
        "{e}"
    );
}

#[test]
fn missing_and_extra_tensors_are_listed() {
    let d = folder("missing");
    let mut t = tensors();
    t.remove(9); // up_proj
    t.push(("model.layers.0.mlp.extra.weight".into(), vec![8]));
    write_safetensors(&d.join("model.safetensors"), &t, "BF16");
    let e = convert_err(&d);
    assert!(
        e.contains("missing tensors (1): model.layers.0.mlp.up_proj.weight"),
        "{e}"
    );
    assert!(
        e.contains("unexpected tensors (1): model.layers.0.mlp.extra.weight"),
        "{e}"
    );
}

#[test]
fn unknown_dtype() {
    let d = folder("dtype");
    write_safetensors(&d.join("model.safetensors"), &tensors(), "F8_E4M3");
    let e = convert_err(&d);
    assert!(
        e.contains("unsupported dtype 'F8_E4M3'") && e.contains("tensor '"),
        "{e}"
    );
}

#[test]
fn missing_tokenizer() {
    let d = folder("tokenizer");
    write_safetensors(&d.join("model.safetensors"), &tensors(), "BF16");
    let e = convert_err(&d);
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn unsupported_architecture() {
    let d = folder("arch");
    std::fs::write(
        d.join("config.json"),
        CONFIG.replace("LlamaForCausalLM", "GPTNeoXForCausalLM"),
    )
    .unwrap();
    write_safetensors(&d.join("model.safetensors"), &tensors(), "BF16");
    let e = convert_err(&d);
    assert!(
        e.contains("GPTNeoXForCausalLM") && e.contains("LlamaForCausalLM"),
        "{e}"
    );
}

/// The command line reports the error and exits non-zero, leaving no file.
#[test]
fn cli_reports_errors() {
    let d = folder("cli");
    write_safetensors(&d.join("model.safetensors"), &tensors(), "BF16");
    let out = d.join("cli.gguf");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "convert".as_ref(),
        d.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tokenizer.json"),
        "{err}"
    );
    assert!(!out.exists());
    let o = run(&[
        "convert".as_ref(),
        d.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--outtype".as_ref(),
        "q9_9".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown --outtype 'q9_9'"),
        "{err}"
    );
    let o = run(&[
        "quantize".as_ref(),
        d.join("missing.gguf").as_os_str(),
        out.as_os_str(),
        "Q4_K_M".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("missing.gguf"), "{err}");
    assert!(!out.exists());
}
