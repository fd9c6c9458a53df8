//! Acceptance test for the GGUF reader and writer: every real model in `models/manifest.json`,
//! read and written back with `GgufWriter`, must be byte-identical to the original.

mod common;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ggml_compat::gguf::{GgufFile, GgufWriter, TensorInfoOut};

/// Write `src` back out through the writer, tensor by tensor, straight from the map.
fn rewrite(src: &GgufFile, dest: &Path) {
    let h = src.header();
    let infos: Vec<TensorInfoOut> = h.tensors.iter().map(TensorInfoOut::from).collect();
    let mut w = GgufWriter::create(dest, h.version, h.alignment, &h.metadata, &infos)
        .unwrap_or_else(|e| panic!("{e}"));
    for t in &h.tensors {
        w.write_tensor_data(&t.name, src.tensor_data(t))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    w.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// The first byte offset where `expected` and the file at `path` differ, comparing in
/// streaming chunks; `None` if they are identical (same length, same bytes).
fn first_difference(expected: &[u8], path: &Path) -> Option<u64> {
    let mut reader = BufReader::new(File::open(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0usize;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return (pos != expected.len()).then_some(pos as u64);
        }
        let want = expected
            .get(pos..pos + n)
            .unwrap_or(&expected[pos.min(expected.len())..]);
        if let Some(i) = want.iter().zip(&buf[..n]).position(|(a, b)| a != b) {
            return Some((pos + i) as u64);
        }
        if want.len() < n {
            return Some((pos + want.len()) as u64);
        }
        pos += n;
    }
}

#[test]
fn every_model_rewrites_byte_identically() {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_roundtrip");
    std::fs::create_dir_all(&out_dir).unwrap();
    for name in common::all_model_names() {
        let path = common::model_path(&name);
        let src = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!src.tensors().is_empty(), "{name}: no tensors");
        let dest = out_dir.join(format!("{name}.gguf"));
        rewrite(&src, &dest);
        let diff = first_difference(src.bytes(), &dest);
        let len = std::fs::metadata(&dest).unwrap().len();
        std::fs::remove_file(&dest).unwrap();
        assert_eq!(
            diff,
            None,
            "{name}: rewritten file ({len} bytes) differs from {} ({} bytes) at byte {diff:?} (data section starts at {})",
            path.display(),
            src.bytes().len(),
            src.header().data_offset
        );
    }
}

/// The vocabulary-only files of llama.cpp's tokenizer tests (no tensors, no final padding).
#[test]
fn every_shared_vocab_file_rewrites_byte_identically() {
    let dir = std::env::var_os("KILN_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| common::workspace_root().join("../shared"))
        .join("vocab");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set KILN_SHARED)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .gguf files in {}", dir.display());
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_roundtrip_vocab");
    std::fs::create_dir_all(&out_dir).unwrap();
    for path in paths {
        let src = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let dest = out_dir.join(path.file_name().unwrap());
        rewrite(&src, &dest);
        let diff = first_difference(src.bytes(), &dest);
        std::fs::remove_file(&dest).unwrap();
        assert_eq!(
            diff,
            None,
            "{}: rewritten file differs at byte {diff:?}",
            path.display()
        );
    }
}

#[test]
fn writer_removes_its_temporary_file_unless_finished() {
    let path = common::model_path("smollm2-135m-instruct-q4_1");
    let src = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let h = src.header();
    let infos: Vec<TensorInfoOut> = h.tensors.iter().map(TensorInfoOut::from).collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_writer_abort");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("out.gguf");
    let tmp = dir.join("out.gguf.tmp");

    // Dropped half way: neither the temporary nor the destination survives.
    let mut w = GgufWriter::create(&dest, h.version, h.alignment, &h.metadata, &infos).unwrap();
    assert!(
        tmp.is_file(),
        "the writer should stream into {}",
        tmp.display()
    );
    let first = &h.tensors[0];
    w.write_tensor_data(&first.name, src.tensor_data(first))
        .unwrap();
    drop(w);
    assert!(!tmp.exists() && !dest.exists());

    // Out of order, wrong size, and finishing early are errors that name the tensor.
    let mut w = GgufWriter::create(&dest, h.version, h.alignment, &h.metadata, &infos).unwrap();
    let second = &h.tensors[1];
    let e = w
        .write_tensor_data(&second.name, src.tensor_data(second))
        .unwrap_err();
    assert!(e.to_string().contains(&first.name), "{e}");
    let e = w.write_tensor_data(&first.name, &[0u8; 3]).unwrap_err();
    assert!(e.to_string().contains("3 bytes"), "{e}");
    w.write_tensor_data(&first.name, src.tensor_data(first))
        .unwrap();
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains(&second.name), "{e}");
    assert!(!tmp.exists() && !dest.exists());

    // A mismatched general.alignment is refused before anything is written.
    let e = GgufWriter::create(&dest, h.version, 64, &h.metadata, &infos).unwrap_err();
    assert!(e.to_string().contains("general.alignment"), "{e}");
    assert!(!tmp.exists());
}
