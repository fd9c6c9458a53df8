//! `kiln inspect` on a real model (text and JSON) and on broken files, through the binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use ggml_compat::gguf::GgufFile;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn text_output_describes_a_real_model() {
    let path = common::model_path("smollm2-135m-instruct-q4_1");
    let file = GgufFile::open(&path).unwrap();
    let out = kiln(&["inspect", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let h = file.header();
    assert!(
        stdout.contains(&format!("version:      {}", h.version)),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("tensors:      {}", h.tensors.len())));
    assert!(stdout.contains(&format!("metadata:     {} keys", h.metadata.len())));
    // The vocabulary is summarized, not dumped.
    let n_vocab = h
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert!(stdout.contains(&format!("arr[str; {n_vocab}]")), "{stdout}");
    assert!(stdout.contains(&format!("… {} more", n_vocab - 8)));
    assert!(stdout.len() < 100_000, "output is {} bytes", stdout.len());
    // Every tensor has a row with its name, type and size.
    for t in &h.tensors {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(t.name.as_str()))
            .unwrap_or_else(|| panic!("no row for {}", t.name));
        assert!(
            row.contains(t.ty.name()) && row.contains(&t.size.to_string()),
            "{row}"
        );
    }
    let all = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("all "))
        .unwrap();
    let total: u64 = h.tensors.iter().map(|t| t.size).sum();
    assert!(all.contains(&total.to_string()), "{all}");
}

#[test]
fn json_output_matches_the_reader() {
    let path = common::model_path("gemma-3-270m-q4_k_m");
    let file = GgufFile::open(&path).unwrap();
    let out = kiln(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let h = file.header();

    assert_eq!(doc["version"], h.version);
    assert_eq!(doc["alignment"], h.alignment);
    assert_eq!(doc["data_offset"], h.data_offset);
    assert_eq!(doc["file_size"], file.bytes().len() as u64);
    assert_eq!(doc["metadata"].as_array().unwrap().len(), h.metadata.len());
    let arch = doc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "general.architecture")
        .unwrap();
    assert_eq!(arch["value"], "gemma3");
    let tokens = doc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    let n_vocab = h
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tokens["value"]["len"], n_vocab);
    assert_eq!(tokens["value"]["truncated"], true);

    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), h.tensors.len());
    for (j, t) in tensors.iter().zip(&h.tensors) {
        assert_eq!(j["name"], t.name.as_str());
        assert_eq!(j["type"], t.ty.name());
        assert_eq!(j["bytes"], t.size);
        assert_eq!(j["offset"], t.offset);
        assert_eq!(j["shape"], serde_json::json!(t.dims));
    }
    let params: u64 = h.tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(doc["totals"]["params"], params);
}

fn assert_clean_failure(path: &Path, needle: &str) {
    let out = kiln(&["inspect", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(
        stderr.contains(path.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn corrupt_and_non_gguf_files_fail_cleanly() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_inspect");
    std::fs::create_dir_all(&dir).unwrap();

    let not_gguf = dir.join("not-gguf.bin");
    std::fs::write(&not_gguf, b"PK\x03\x04 this is a zip, not a model").unwrap();
    assert_clean_failure(&not_gguf, "not a GGUF file");

    // A real model cut off in the middle of its tensor data.
    let model = std::fs::read(common::model_path("smollm2-135m-instruct-q4_1")).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &model[..model.len() / 2]).unwrap();
    assert_clean_failure(&cut, "past the end of the file");

    // ... and in the middle of its metadata.
    let cut_meta = dir.join("cut-meta.gguf");
    std::fs::write(&cut_meta, &model[..100_000]).unwrap();
    assert_clean_failure(&cut_meta, "byte");

    assert_clean_failure(&dir.join("missing.gguf"), "os error 2");
}
