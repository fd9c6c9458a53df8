//! Handcrafted GGUF files, valid and broken, built byte by byte in memory (in the spirit of
//! ggml's `tests/test-gguf.cpp`). Every broken file must give a specific `Err` — never a
//! panic, never an allocation sized by a lying length field.

use ggml_compat::gguf::{parse, GgufError, GgufFile, Value, ValueType};
use ggml_compat::GgmlType;

/// A little-endian byte builder for GGUF files.
#[derive(Clone, Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        Bytes::default()
            .raw(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(4).u32(v)
    }
    fn kv_str(self, key: &str, v: &str) -> Self {
        self.str(key).u32(8).str(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`, then `n` data bytes counting 0, 1, 2, ...
    fn data(mut self, align: usize, n: usize) -> Self {
        while self.0.len() % align != 0 {
            self.0.push(0);
        }
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
}

/// A small valid v3 file: scalar, string and nested-array metadata, two F32 tensors
/// (16 bytes, padded to 32, then 64 bytes).
fn valid() -> Vec<u8> {
    Bytes::header(3, 2, 4)
        .kv_str("general.architecture", "llama")
        .kv_u32("general.alignment", 32)
        // tokens: array of 2 strings
        .str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("a")
        .str("bc")
        // nested: array of 2 arrays of i16
        .str("test.nested")
        .u32(9)
        .u32(9)
        .u64(2)
        .u32(3)
        .u64(1)
        .raw(&(-5i16).to_le_bytes())
        .u32(3)
        .u64(0)
        .tensor("a", &[4], 0, 0)
        .tensor("b", &[8, 2], 0, 32)
        .data(32, 32 + 64)
        .0
}

fn err(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(h) => panic!("parse accepted a broken file: {h:?}"),
        Err(e) => e,
    }
}

#[test]
fn valid_file_parses_completely() {
    let bytes = valid();
    let h = parse(&bytes).expect("valid file");
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 32);
    assert_eq!(h.metadata.len(), 4);
    assert_eq!(
        h.get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
    let tokens = h.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.strings(), Some(vec!["a", "bc"]));
    let nested = h.get("test.nested").unwrap().as_array().unwrap();
    assert_eq!(nested.elem, ValueType::Array);
    let inner = nested.values[0].as_array().unwrap();
    assert_eq!(inner.elem, ValueType::I16);
    assert_eq!(inner.i64s(), Some(vec![-5]));
    let empty = nested.values[1].as_array().unwrap();
    assert_eq!((empty.elem, empty.values.len()), (ValueType::I16, 0));

    assert_eq!(h.tensors.len(), 2);
    let b = &h.tensors[1];
    assert_eq!(
        (b.name.as_str(), b.ty, b.dims.clone()),
        ("b", GgmlType::F32, vec![8, 2])
    );
    assert_eq!(
        (b.size, b.n_elements(), b.n_rows(), b.row_bytes()),
        (64, 16, 2, 32)
    );
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(h.data_offset + 32 + 64, bytes.len() as u64);
}

#[test]
fn version_2_parses_and_versions_0_1_4_and_big_endian_are_refused() {
    let mut v2 = valid();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(parse(&v2).unwrap().version, 2);
    for (version, needle) in [
        (0u32, "never valid"),
        (1, "v1 is no longer supported"),
        (4, "versions 2 and 3"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut b = valid();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let e = err(&b);
        assert!(matches!(e, GgufError::UnsupportedVersion { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{version}: {e}");
    }
}

#[test]
fn bad_magic() {
    let mut b = valid();
    b[..4].copy_from_slice(b"GGML");
    let e = err(&b);
    assert!(
        matches!(e, GgufError::BadMagic { ref found } if found == "GGML"),
        "{e}"
    );
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = valid();
    for len in 0..bytes.len() {
        let result = std::panic::catch_unwind(|| parse(&bytes[..len]));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("prefix of {len} bytes parsed as a whole file"),
            Err(_) => panic!("prefix of {len} bytes panicked"),
        }
    }
    // Cut inside the second key: a Truncated error that says what and where.
    let e = err(&bytes[..80]);
    assert!(matches!(e, GgufError::Truncated { offset: 77, .. }), "{e}");
    assert!(e.to_string().contains("metadata key #1"), "{e}");
}

#[test]
fn huge_string_length_is_refused_before_allocating() {
    let b = Bytes::header(3, 0, 1)
        .str("k")
        .u32(8)
        .u64(1 << 60)
        .raw(b"abc")
        .0;
    let e = err(&b);
    match &e {
        GgufError::Truncated {
            what,
            needed,
            available,
            ..
        } => {
            assert!(what.contains("'k'"), "{e}");
            assert_eq!((*needed, *available), (1 << 60, 3));
        }
        _ => panic!("{e}"),
    }
    // Same for a key.
    let b = Bytes::header(3, 0, 1).u64(u64::MAX).raw(&[b'x'; 32]).0;
    let e = err(&b);
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                needed: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn huge_array_length_is_refused_before_allocating() {
    for (elem, len) in [
        (0u32, 1u64 << 60),
        (8, 1 << 61),
        (9, u64::MAX),
        (12, 1 << 62),
    ] {
        let b = Bytes::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(elem)
            .u64(len)
            .raw(&[0; 64])
            .0;
        let e = err(&b);
        assert!(
            matches!(e, GgufError::CountTooLarge { count, .. } if count == len),
            "{e}"
        );
        assert!(e.to_string().contains("'arr'"), "{e}");
    }
}

#[test]
fn huge_counts_are_refused() {
    let e = err(&Bytes::header(3, u64::MAX, 0).0);
    assert!(e.to_string().contains("tensor count"), "{e}");
    let e = err(&Bytes::header(3, 0, 1 << 40).raw(&[0; 100]).0);
    assert!(e.to_string().contains("metadata count"), "{e}");
}

#[test]
fn nesting_depth_is_capped() {
    let mut b = Bytes::header(3, 0, 1).str("deep").u32(9);
    for _ in 0..100 {
        b = b.u32(9).u64(1);
    }
    let e = err(&b.u32(0).u64(0).0);
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
}

#[test]
fn duplicate_and_empty_keys() {
    let b = Bytes::header(3, 0, 2).kv_u32("x", 1).kv_u32("x", 2).0;
    let e = err(&b);
    assert!(
        matches!(e, GgufError::DuplicateKey { ref key, .. } if key == "x"),
        "{e}"
    );
    let b = Bytes::header(3, 0, 1).kv_u32("", 1).0;
    assert!(matches!(err(&b), GgufError::EmptyKey { .. }));
}

#[test]
fn unknown_value_type() {
    let b = Bytes::header(3, 0, 1).str("k").u32(13).u32(0).0;
    let e = err(&b);
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 13, .. }),
        "{e}"
    );
    // ... also as an array element type.
    let b = Bytes::header(3, 0, 1).str("k").u32(9).u32(99).u64(0).0;
    assert!(matches!(
        err(&b),
        GgufError::UnknownValueType { id: 99, .. }
    ));
}

#[test]
fn invalid_utf8_string() {
    let b = Bytes::header(3, 0, 1)
        .str("k")
        .u32(8)
        .u64(2)
        .raw(&[0xff, 0xfe])
        .0;
    assert!(matches!(err(&b), GgufError::InvalidUtf8 { .. }));
}

#[test]
fn bad_alignment_values_and_types() {
    for a in [0u32, 3, 48, 1000] {
        let b = Bytes::header(3, 0, 1).kv_u32("general.alignment", a).0;
        let e = err(&b);
        assert!(
            matches!(e, GgufError::BadAlignment { alignment } if alignment == a as u64),
            "{e}"
        );
    }
    let b = Bytes::header(3, 0, 1)
        .str("general.alignment")
        .u32(10)
        .u64(32)
        .0;
    assert!(matches!(
        err(&b),
        GgufError::AlignmentType {
            found: ValueType::U64
        }
    ));
    // A valid non-default alignment is honoured.
    let b = Bytes::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("t", &[16], 0, 0)
        .data(64, 64)
        .0;
    let h = parse(&b).unwrap();
    assert_eq!((h.alignment, h.data_offset % 64), (64, 0));
}

fn one_tensor(name: &str, dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
    Bytes::header(3, 1, 0)
        .tensor(name, dims, ty, offset)
        .data(32, data)
        .0
}

#[test]
fn duplicate_tensor_name() {
    let b = Bytes::header(3, 2, 0)
        .tensor("w", &[4], 0, 0)
        .tensor("w", &[4], 0, 32)
        .data(32, 64)
        .0;
    let e = err(&b);
    assert!(
        matches!(e, GgufError::DuplicateTensor { ref name, .. } if name == "w"),
        "{e}"
    );
}

#[test]
fn misaligned_tensor_offset() {
    let e = err(&one_tensor("w", &[4], 0, 4, 64));
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                offset: 4,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tensor_past_eof() {
    let e = err(&one_tensor("w", &[16], 0, 0, 63));
    assert!(
        matches!(e, GgufError::TensorPastEof { ref name, .. } if name == "w"),
        "{e}"
    );
    // An offset so large that data_offset + offset overflows.
    let e = err(&one_tensor("w", &[16], 0, u64::MAX - 31, 64));
    assert!(matches!(e, GgufError::TensorPastEof { .. }), "{e}");
}

#[test]
fn overlapping_tensors() {
    let b = Bytes::header(3, 2, 0)
        .tensor("a", &[16], 0, 32)
        .tensor("b", &[16], 0, 0)
        .data(32, 128)
        .0;
    let e = err(&b);
    assert!(
        matches!(e, GgufError::OverlappingTensors { ref first, ref second, .. } if first == "b" && second == "a"),
        "{e}"
    );
}

#[test]
fn unknown_and_removed_tensor_types() {
    let e = err(&one_tensor("w", &[32], 43, 0, 64));
    assert!(
        matches!(e, GgufError::UnknownTensorType { id: 43, .. }),
        "{e}"
    );
    for id in [4, 5, 31, 32, 33, 36, 37, 38] {
        let e = err(&one_tensor("w", &[32], id, 0, 64));
        assert!(e.to_string().contains("removed from ggml"), "{id}: {e}");
    }
}

#[test]
fn bad_shapes() {
    let e = err(&one_tensor("w", &[1, 1, 1, 1, 1], 0, 0, 64));
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");
    let e = err(&one_tensor("w", &[4, 0], 0, 0, 64));
    assert!(
        matches!(
            e,
            GgufError::BadDim {
                index: 1,
                value: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&one_tensor("w", &[1 << 63], 0, 0, 64));
    assert!(matches!(e, GgufError::BadDim { .. }), "{e}");
    let e = err(&one_tensor("w", &[1 << 32, 1 << 32], 0, 0, 64));
    assert!(matches!(e, GgufError::TooManyElements { .. }), "{e}");
    // Q4_0 rows must be whole 32-element blocks.
    let e = err(&one_tensor("w", &[16], 2, 0, 64));
    assert!(
        matches!(
            e,
            GgufError::NotBlockMultiple {
                ne0: 16,
                block: 32,
                ..
            }
        ),
        "{e}"
    );
    // Element count fits but the byte count overflows: 2^62 elements of I64.
    let e = err(&one_tensor("w", &[1 << 62], 27, 0, 64));
    assert!(matches!(e, GgufError::TooManyElements { .. }), "{e}");
}

#[test]
fn long_tensor_name() {
    let name = "x".repeat(64);
    let e = err(&one_tensor(&name, &[4], 0, 0, 64));
    assert!(
        matches!(e, GgufError::TensorNameTooLong { len: 64, .. }),
        "{e}"
    );
    assert!(parse(&one_tensor(&"x".repeat(63), &[4], 0, 0, 64)).is_ok());
}

#[test]
fn open_names_the_path_and_serves_zero_copy_views() {
    let dir = std::env::temp_dir().join(format!("kiln-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.gguf");
    let bytes = valid();
    std::fs::write(&good, &bytes).unwrap();
    let f = GgufFile::open(&good).unwrap();
    let b = f.tensor("b").unwrap();
    let data = f.tensor_data(b);
    assert_eq!(data.len(), 64);
    let start = f.header().data_offset as usize + 32;
    assert_eq!(data, &bytes[start..start + 64]);
    assert!(std::ptr::eq(data.as_ptr(), f.bytes()[start..].as_ptr()));

    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, &bytes[..40]).unwrap();
    let e = GgufFile::open(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.gguf") && e.contains("byte"), "{e}");
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(GgufFile::open(&empty).is_err());
    let missing = GgufFile::open(dir.join("missing.gguf"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("missing.gguf"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_single_byte_corruption_is_handled() {
    let bytes = valid();
    for i in 0..bytes.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            // Ok or Err are both fine; a panic fails the test.
            if let Ok(h) = parse(&b) {
                for t in &h.tensors {
                    assert!(h.data_offset + t.offset + t.size <= b.len() as u64);
                }
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Random edits (overwrite, insert, delete, cut) of a valid file never panic.
    #[test]
    fn random_edits_never_panic(
        edits in proptest::collection::vec((0usize..512, proptest::num::u8::ANY, 0u8..4), 1..8),
    ) {
        let mut b = valid();
        for (pos, byte, kind) in edits {
            let pos = pos % (b.len() + 1);
            match kind {
                0 if pos < b.len() => b[pos] = byte,
                1 => b.insert(pos, byte),
                2 if pos < b.len() => { b.remove(pos); }
                _ => b.truncate(pos),
            }
        }
        let _ = parse(&b);
    }
}

#[test]
fn writer_reproduces_the_handcrafted_file_byte_for_byte() {
    use ggml_compat::gguf::{GgufWriter, TensorInfoOut};
    let mut bytes = valid();
    let h = parse(&bytes).unwrap();
    // The writer pads with zeros; the handcrafted file has counting bytes in the padding
    // between tensor a (16 bytes) and tensor b (at 32).
    let pad = h.data_offset as usize + 16..h.data_offset as usize + 32;
    bytes[pad].fill(0);

    let dir = std::env::temp_dir().join(format!("kiln-gguf-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.gguf");
    let infos: Vec<TensorInfoOut> = h.tensors.iter().map(TensorInfoOut::from).collect();
    let mut w = GgufWriter::create(&out, h.version, h.alignment, &h.metadata, &infos).unwrap();
    for t in &h.tensors {
        let start = (h.data_offset + t.offset) as usize;
        w.write_tensor_data(&t.name, &bytes[start..start + t.size as usize])
            .unwrap();
    }
    w.finish().unwrap();
    let written = std::fs::read(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(written, bytes);
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    use ggml_compat::gguf::{Array, GgufWriter, TensorInfoOut};
    let dir = std::env::temp_dir().join(format!("kiln-gguf-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.gguf");
    let t = |name: &str, dims: &[u64], ty| TensorInfoOut {
        name: name.into(),
        ty,
        dims: dims.to_vec(),
    };
    let kv = |k: &str, v: Value| (k.to_owned(), v);
    type Case = (Vec<(String, Value)>, Vec<TensorInfoOut>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![kv("a", Value::U8(1)), kv("a", Value::U8(2))],
            vec![],
            "duplicate metadata key 'a'",
        ),
        (vec![kv("", Value::U8(1))], vec![], "empty metadata key"),
        (
            vec![kv(
                "mixed",
                Value::Array(Array {
                    elem: ValueType::U8,
                    values: vec![Value::I8(1)],
                }),
            )],
            vec![],
            "key 'mixed': element 0 is i8",
        ),
        (
            vec![],
            vec![t("w", &[4], GgmlType::F32), t("w", &[4], GgmlType::F32)],
            "duplicate tensor name 'w'",
        ),
        (
            vec![],
            vec![t("w", &[16], GgmlType::Q4_0)],
            "not a multiple of the block size",
        ),
        (
            vec![],
            vec![t("w", &[4, 0], GgmlType::F32)],
            "invalid shape",
        ),
        (
            vec![],
            vec![t("w", &[1, 1, 1, 1, 1], GgmlType::F32)],
            "invalid shape",
        ),
    ];
    for (metadata, tensors, needle) in cases {
        let e = GgufWriter::create(&out, 3, 32, &metadata, &tensors)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(needle) && e.contains("out.gguf"),
            "expected {needle:?} in {e}"
        );
        assert!(!out.exists() && !dir.join("out.gguf.tmp").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
