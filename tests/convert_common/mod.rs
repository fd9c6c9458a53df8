//! Shared by the converter/quantizer golden tests: the Hugging Face folder that
//! `../shared/tools/gguf_to_hf.py` makes from SmolLM2-135M-Instruct.Q4_1.gguf, kiln's F16
//! conversion of it (checked against `hf-to-gguf.json` before anything uses it), and the
//! comparison of a GGUF file with one entry of a golden JSON file.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use indicatif::ProgressBar;
use kiln::convert::hf_to_gguf::{convert_dir, ConvertParams};
use kiln::convert::recipe::Ftype;
use kiln::ggml_compat::gguf::{GgufFile, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A golden file: parsed, plus its text (serde_json's maps are sorted; the key order of the
/// metadata is read from the text).
pub struct Golden {
    pub json: Json,
    text: String,
    arrays: ArrayHash,
}

/// How a golden file hashes a metadata array.
#[derive(Clone, Copy)]
pub enum ArrayHash {
    /// `json.dumps(value, ensure_ascii=False)` of the array (`../shared/golden/convert`).
    PyJson,
    /// The bytes GGUF stores for the elements (`tools/gguf_golden_json.py`).
    GgufBytes,
}

/// `../shared/golden/convert/NAME`.
pub fn golden(name: &str) -> Golden {
    load_golden(
        &root().join("../shared/golden/convert").join(name),
        ArrayHash::PyJson,
    )
}

/// A golden JSON file at `path` whose arrays are hashed as `arrays` says.
pub fn load_golden(path: &Path, arrays: ArrayHash) -> Golden {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Golden { json, text, arrays }
}

impl Golden {
    /// The metadata keys of entry `file` in file order: the golden is pretty-printed with
    /// one-space indents, so they are the lines indented by exactly three spaces.
    fn key_order(&self, file: &str) -> Vec<String> {
        let start = self
            .text
            .find(&format!("\"file\": \"{file}\""))
            .expect("entry in golden text");
        let md = start
            + self.text[start..]
                .find("\"metadata\": {")
                .expect("metadata");
        let mut keys = Vec::new();
        for line in self.text[md..].lines().skip(1) {
            if !line.starts_with("   ") {
                break;
            }
            if let Some(rest) = line.strip_prefix("   \"") {
                if let Some(end) = rest.find("\": ") {
                    keys.push(serde_json::from_str(&format!("\"{}\"", &rest[..end])).unwrap());
                }
            }
        }
        keys
    }
}

pub fn work_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("convert-golden");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The verified SmolLM2 GGUF (`models/fetch.py`).
fn smollm2() -> PathBuf {
    common::model_path("smollm2-135m-instruct-q4_1")
}

/// The HF folder, named like the model (its name gives general.name etc.), made once.
pub fn hf_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir().join("SmolLM2-135M-Instruct");
        if dir.join("tokenizer.json").is_file() {
            return dir;
        }
        let tmp = work_dir().join(format!("hf-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new("python3")
            .arg(root().join("../shared/tools/gguf_to_hf.py"))
            .arg(smollm2())
            .arg(&tmp)
            .output()
            .expect("running python3 ../shared/tools/gguf_to_hf.py");
        assert!(
            out.status.success(),
            "gguf_to_hf.py failed (needs `pip install numpy gguf`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
        dir
    })
}

/// Convert the HF folder with kiln to `outtype` into the work dir.
pub fn convert(outtype: &str) -> PathBuf {
    let ft = Ftype::from_name(outtype).unwrap();
    let out = work_dir().join(format!("kiln-{outtype}.gguf"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    convert_dir(
        hf_dir(),
        &out,
        &ConvertParams {
            outtype: ft,
            threads,
        },
        &ProgressBar::hidden(),
    )
    .unwrap_or_else(|e| panic!("kiln convert --outtype {outtype}: {e}"));
    out
}

/// kiln's F16 conversion, checked against hf-to-gguf.json's f16 entry: the starting point of
/// every llama-quantize golden.
pub fn f16_file() -> &'static Path {
    static F16: OnceLock<PathBuf> = OnceLock::new();
    F16.get_or_init(|| {
        let p = convert("f16");
        let bad = compare(&golden("hf-to-gguf.json"), "smollm2-hf-f16.gguf", &p);
        assert!(
            bad.is_empty(),
            "the F16 file differs from the golden:\n{}",
            bad.join("\n")
        );
        p
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `json.dumps(value, ensure_ascii=False)` of an array, as the golden hashes it.
fn py_json_array(v: &Value) -> Option<String> {
    let a = v.as_array()?;
    let items: Vec<String> = a
        .values
        .iter()
        .map(|e| match e {
            Value::String(s) => serde_json::to_string(s).unwrap(),
            other => other
                .as_i64()
                .map(|i| i.to_string())
                .unwrap_or_else(|| format!("{other}")),
        })
        .collect();
    Some(format!("[{}]", items.join(", ")))
}

/// The bytes GGUF stores for an array's elements (strings as u64 length + UTF-8, numbers
/// little-endian), or `None` for an element type this does not handle.
fn gguf_array_bytes(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for e in &v.as_array()?.values {
        match e {
            Value::String(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s.as_bytes());
            }
            Value::F32(f) => out.extend(f.to_le_bytes()),
            Value::I32(i) => out.extend(i.to_le_bytes()),
            Value::U32(u) => out.extend(u.to_le_bytes()),
            _ => return None,
        }
    }
    Some(out)
}

fn value_matches(v: &Value, want: &Json, arrays: ArrayHash) -> bool {
    match (v, want) {
        (Value::String(s), Json::String(w)) => s == w,
        (Value::Bool(b), Json::Bool(w)) => b == w,
        (Value::F32(f), Json::Number(n)) => n.as_f64() == Some(f64::from(*f)),
        (Value::F64(f), Json::Number(n)) => n.as_f64() == Some(*f),
        (Value::Array(_), Json::Object(o)) => {
            let len = o.get("len").and_then(Json::as_u64);
            let sha = o.get("sha256").and_then(Json::as_str);
            let bytes = match arrays {
                ArrayHash::PyJson => py_json_array(v).map(String::into_bytes),
                ArrayHash::GgufBytes => gguf_array_bytes(v),
            };
            len == Some(v.as_array().map_or(0, |a| a.values.len()) as u64)
                && sha == Some(hex(&Sha256::digest(bytes.unwrap_or_default())).as_str())
        }
        (v, Json::Number(n)) => v.as_i64().is_some() && v.as_i64() == n.as_i64(),
        _ => false,
    }
}

/// Every difference between `path` and the golden entry named `file`: the whole file's sha256
/// where the golden has one (nothing else is compared when it matches), tensor order, names,
/// types, shapes and data sha256; metadata keys (in order) and values.
pub fn compare(golden: &Golden, file: &str, path: &Path) -> Vec<String> {
    let entry = golden
        .json
        .as_array()
        .and_then(|a| a.iter().find(|e| e["file"] == file))
        .unwrap_or_else(|| panic!("no golden entry {file}"));
    let mut bad = Vec::new();
    if let Some(want) = entry.get("sha256") {
        let whole = hex(&Sha256::digest(std::fs::read(path).unwrap()));
        if *want == whole.as_str() {
            return bad;
        }
        bad.push(format!("file sha256 {whole}, golden {want}"));
    }
    let g = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let want_t = entry["tensors"].as_array().unwrap();
    if want_t.len() != g.tensors().len() {
        bad.push(format!(
            "{} tensors, golden has {}",
            g.tensors().len(),
            want_t.len()
        ));
    }
    for (t, w) in g.tensors().iter().zip(want_t) {
        let sha = hex(&Sha256::digest(g.tensor_data(t)));
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Json::as_u64)
            .collect();
        if w["name"] != t.name.as_str()
            || w["type"] != t.ty.name()
            || shape != t.dims
            || w["sha256"] != sha.as_str()
        {
            bad.push(format!(
                "tensor {} {} {:?} (golden: {} {} {:?}, data {})",
                t.name,
                t.ty.name(),
                t.dims,
                w["name"],
                w["type"],
                shape,
                if w["sha256"] == sha.as_str() {
                    "same"
                } else {
                    "differs"
                }
            ));
        }
    }
    let want_md = entry["metadata"].as_object().unwrap();
    let keys: Vec<&str> = g
        .header()
        .metadata
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let order = golden.key_order(file);
    let want_keys: Vec<&str> = order.iter().map(String::as_str).collect();
    assert_eq!(want_keys.len(), want_md.len(), "golden key order scan");
    if keys != want_keys {
        bad.push(format!("metadata keys {keys:?}\n  golden {want_keys:?}"));
    }
    for (k, w) in want_md {
        match g.get(k) {
            Some(v) if value_matches(v, w, golden.arrays) => {}
            Some(v) => bad.push(format!("metadata {k} = {v} (golden {w})")),
            None => bad.push(format!("metadata {k} missing")),
        }
    }
    bad
}
