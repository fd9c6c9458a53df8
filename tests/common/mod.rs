//! Helpers shared by the `kiln` integration tests and benches: where the golden vectors are,
//! reading them, and deterministic test data. Each test crate uses only some of them.
#![allow(dead_code)]

use std::path::PathBuf;

/// `shared/golden/quant` (`$KILN_SHARED/golden/quant`, or `../shared` next to the project).
/// A missing folder is a failure, never a skip.
pub fn golden_root() -> PathBuf {
    let root = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("golden/quant");
    assert!(
        root.is_dir(),
        "golden vectors not found at {} (set KILN_SHARED)",
        root.display()
    );
    root
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
