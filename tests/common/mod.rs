//! Helpers shared by kiln's integration tests and benches: reference data, real models, and
//! deterministic test data. Include with `mod common;`.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the `kiln` package's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared reference data (`../shared`, or `$KILN_SHARED`); panics if it is absent.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"));
    assert!(
        dir.is_dir(),
        "reference data not found at {} (set KILN_SHARED)",
        dir.display()
    );
    dir
}

/// The path of real model `name` (a name from `models/manifest.json`), fetched and verified
/// by `python3 models/fetch.py NAME --path` if it is not already in `models/`.
///
/// Panics with the script's output if the model cannot be obtained: a test that needs a real
/// model fails, it never silently skips.
pub fn model_path(name: &str) -> PathBuf {
    let root = workspace_root();
    let output = Command::new("python3")
        .arg(root.join("models/fetch.py"))
        .arg(name)
        .arg("--path")
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `python3 models/fetch.py {name} --path`: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "could not obtain model '{name}' (`python3 models/fetch.py {name} --path` exited with {}):\n{stdout}{stderr}",
        output.status
    );
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("models/fetch.py {name} --path printed no path:\n{stderr}"));
    assert!(
        path.is_file(),
        "models/fetch.py reported {} for '{name}', but it is not a file",
        path.display()
    );
    path
}

/// Every model name in `models/manifest.json`.
pub fn all_model_names() -> Vec<String> {
    let path = workspace_root().join("models/manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    let names: Vec<String> = json["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no \"models\" array", path.display()))
        .iter()
        .map(|m| {
            m["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a model without a name", path.display()))
                .to_owned()
        })
        .collect();
    assert!(!names.is_empty(), "{} lists no models", path.display());
    names
}

/// `shared/golden/quant`. A missing folder is a failure, never a skip.
pub fn golden_root() -> PathBuf {
    shared_dir().join("golden/quant")
}

/// The bytes of `path`; panics naming the file.
pub fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Little-endian f32s.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Deterministic values in [-1, 1) (xorshift64), a different sequence per `seed`.
pub fn values(len: usize, mut seed: u64) -> Vec<f32> {
    seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
