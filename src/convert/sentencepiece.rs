//! A SentencePiece vocabulary (`tokenizer.model`) → `tokenizer.ggml.*` metadata, as
//! `convert_hf_to_gguf.py`'s `_create_vocab_sentencepiece` + `_set_vocab_sentencepiece` do it.
//!
//! `tokenizer.model` is a protobuf `ModelProto` (sentencepiece_model.proto). Only its repeated
//! field 1 (`SentencePiece { string piece = 1; float score = 2; Type type = 3; }`) is read; every
//! other field is skipped by wire type. A truncated or garbled file is an error naming it.

use std::path::Path;

use ggml_compat::gguf::{Array, Value, ValueType};
use serde_json::Value as Json;

use super::special_vocab::{looks_special, SpecialVocab};
use super::{read_json, ConvertError};

/// `SentencePiece.Type` (the numbers ggml's token types also use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<PieceType> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    /// The ggml token type `_create_vocab_sentencepiece` gives a piece of this type: it asks
    /// `IsUnknown`, `IsControl`, `IsUnused`, `IsByte` and calls everything else NORMAL — so a
    /// USER_DEFINED piece becomes NORMAL unless an added token overrides it.
    pub fn ggml_type(self) -> i32 {
        match self {
            PieceType::Unknown => 2,
            PieceType::Control => 3,
            PieceType::Unused => 5,
            PieceType::Byte => 6,
            PieceType::Normal | PieceType::UserDefined => 1,
        }
    }
}

/// One vocabulary entry of a `ModelProto`.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// A position in the protobuf bytes with bounds-checked reads.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field as (number, value).
    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let at = self.pos;
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(format!("field number 0 at byte {at}"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(self.take(4)?),
            w => return Err(format!("unsupported wire type {w} at byte {at}")),
        };
        Ok((number, wire))
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(&'a [u8]),
}

fn parse_piece(bytes: &[u8], index: usize) -> Result<Piece, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while !r.done() {
        match r.field().map_err(|e| format!("piece {index}: {e}"))? {
            (1, Wire::Bytes(b)) => {
                p.piece = std::str::from_utf8(b)
                    .map_err(|_| format!("piece {index}: text is not UTF-8"))?
                    .to_string();
            }
            (2, Wire::Fixed32(b)) => p.score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (3, Wire::Varint(v)) => {
                p.kind = PieceType::from_proto(v)
                    .ok_or_else(|| format!("piece {index}: unknown piece type {v}"))?;
            }
            (1..=3, _) => return Err(format!("piece {index}: field with the wrong wire type")),
            _ => {}
        }
    }
    Ok(p)
}

/// The pieces of a serialized `ModelProto` (what `SentencePieceProcessor.LoadFromFile` reads:
/// `IdToPiece`, `GetScore` and the piece type, by id).
pub fn parse_model_proto(bytes: &[u8], path: &Path) -> Result<Vec<Piece>, ConvertError> {
    let bad = |msg: String| ConvertError::Tokenizer {
        file: path.to_path_buf(),
        msg: format!("not a valid SentencePiece model: {msg}"),
    };
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut pieces = Vec::new();
    while !r.done() {
        match r.field().map_err(bad)? {
            (1, Wire::Bytes(b)) => pieces.push(parse_piece(b, pieces.len()).map_err(bad)?),
            (1, _) => return Err(bad("pieces field with the wrong wire type".into())),
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err(bad("no pieces".into()));
    }
    Ok(pieces)
}

fn str_array(v: Vec<String>) -> Value {
    Value::Array(Array {
        elem: ValueType::String,
        values: v.into_iter().map(Value::String).collect(),
    })
}

/// A vocabulary as `_create_vocab_sentencepiece` returns it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    /// ggml token types
    pub types: Vec<i32>,
}

/// The vocabulary of `_create_vocab_sentencepiece`: tokens, scores and ggml token types,
/// `n_vocab` long (config.json's vocab_size), with added_tokens.json and
/// tokenizer_config.json's `added_tokens_decoder` applied on top of `tokenizer.model`.
pub fn spm_vocab(dir: &Path, n_vocab: u64) -> Result<SpmVocab, ConvertError> {
    let path = dir.join("tokenizer.model");
    if !path.is_file() {
        return Err(ConvertError::Missing {
            dir: dir.to_path_buf(),
            what: "tokenizer.model (the SentencePiece vocabulary)",
        });
    }
    let bytes = std::fs::read(&path).map_err(|error| ConvertError::Io {
        path: path.clone(),
        error,
    })?;
    let pieces = parse_model_proto(&bytes, &path)?;
    let n = usize::try_from(n_vocab).map_err(|_| ConvertError::Config {
        file: dir.join("config.json"),
        msg: format!("vocab_size {n_vocab} is too large"),
    })?;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![PieceType::Unused.ggml_type(); n];
    for (i, p) in pieces.into_iter().take(n).enumerate() {
        tokens[i] = p.piece;
        scores[i] = p.score;
        types[i] = p.kind.ggml_type();
    }
    let id_of = |v: &Json| v.as_u64().and_then(|i| usize::try_from(i).ok());
    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        let added = read_json(&added_path)?;
        let obj = added.as_object().ok_or_else(|| ConvertError::Tokenizer {
            file: added_path.clone(),
            msg: "expected an object of token → id".into(),
        })?;
        for (text, id) in obj {
            if let Some(i) = id_of(id).filter(|&i| i < n) {
                tokens[i] = text.clone();
                scores[i] = -1000.0;
                types[i] = PieceType::UserDefined as i32;
            }
        }
    }
    let cfg_path = dir.join("tokenizer_config.json");
    if cfg_path.is_file() {
        let cfg = read_json(&cfg_path)?;
        if let Some(dec) = cfg.get("added_tokens_decoder").and_then(Json::as_object) {
            for (id, data) in dec {
                let bad = |msg: String| ConvertError::Tokenizer {
                    file: cfg_path.clone(),
                    msg: format!("added_tokens_decoder[\"{id}\"]: {msg}"),
                };
                let i: usize = id.parse().map_err(|_| bad("id is not a number".into()))?;
                let content = data
                    .get("content")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad("no \"content\" string".into()))?;
                if i >= n {
                    continue;
                }
                let special = data.get("special").and_then(Json::as_bool) == Some(true);
                if special || looks_special(content) {
                    tokens[i] = content.to_string();
                    types[i] = PieceType::Control as i32;
                } else {
                    tokens[i] = content.replace('\u{2581}', " ");
                    types[i] = PieceType::UserDefined as i32;
                }
                scores[i] = -1000.0;
            }
        }
    }
    Ok(SpmVocab {
        tokens,
        scores,
        types,
    })
}

/// The `tokenizer.ggml.*` keys of `_set_vocab_sentencepiece` (model `llama`, pre `default`,
/// tokens, scores, token types, then gguf-py's `SpecialVocab`), in the script's order.
pub fn spm_vocab_metadata(dir: &Path, n_vocab: u64) -> Result<Vec<(String, Value)>, ConvertError> {
    let SpmVocab {
        tokens,
        scores,
        types,
    } = spm_vocab(dir, n_vocab)?;
    let mut md: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), str_array(tokens)),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(Array {
                elem: ValueType::F32,
                values: scores.into_iter().map(Value::F32).collect(),
            }),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array {
                elem: ValueType::I32,
                values: types.into_iter().map(Value::I32).collect(),
            }),
        ),
    ];
    md.extend(SpecialVocab::load(dir, Some(n_vocab))?.metadata());
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn piece(text: &str, score: f32, ty: Option<u64>) -> Vec<u8> {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend(text.as_bytes());
        p.push(0x15);
        p.extend(score.to_le_bytes());
        if let Some(t) = ty {
            p.push(0x18);
            varint(t, &mut p);
        }
        let mut out = vec![0x0a];
        varint(p.len() as u64, &mut out);
        out.extend(p);
        out
    }

    fn model() -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(piece("<unk>", 0.0, Some(2)));
        m.extend(piece("<s>", 0.0, Some(3)));
        m.extend(piece("\u{2581}a", -1.5, None));
        m.extend(piece("<0x00>", 0.0, Some(6)));
        m.extend(piece("<u>", 0.0, Some(4)));
        // trainer_spec (field 2) with a varint and a nested string: skipped
        m.extend([0x12, 0x04, 0x18, 0x02, 0x20, 0x05]);
        m
    }

    #[test]
    fn reads_pieces_and_skips_other_fields() {
        let p = parse_model_proto(&model(), Path::new("tokenizer.model")).unwrap();
        let got: Vec<(&str, f32, i32)> = p
            .iter()
            .map(|p| (p.piece.as_str(), p.score, p.kind.ggml_type()))
            .collect();
        // USER_DEFINED → NORMAL, as `_create_vocab_sentencepiece` asks IsUnknown/IsControl/...
        assert_eq!(
            got,
            [
                ("<unk>", 0.0, 2),
                ("<s>", 0.0, 3),
                ("\u{2581}a", -1.5, 1),
                ("<0x00>", 0.0, 6),
                ("<u>", 0.0, 1)
            ]
        );
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let m = model();
        // cutting inside the last field (the trainer spec) or any piece must fail
        for cut in 1..m.len() {
            let r = parse_model_proto(&m[..cut], Path::new("/x/tokenizer.model"));
            // a cut exactly between two top-level fields is a shorter valid model
            let boundaries = piece_boundaries(&m);
            if boundaries.contains(&cut) {
                assert!(r.is_ok(), "cut {cut}");
                continue;
            }
            let e = r.unwrap_err().to_string();
            assert!(e.contains("/x/tokenizer.model"), "{e}");
            assert!(e.contains("not a valid SentencePiece model"), "{e}");
        }
    }

    fn piece_boundaries(m: &[u8]) -> Vec<usize> {
        let mut r = Reader { buf: m, pos: 0 };
        let mut out = Vec::new();
        while !r.done() {
            r.field().unwrap();
            out.push(r.pos);
        }
        out
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"[..],
            b"\x0b\x00",
            b"\x00\x01",
            b"\x0a\x02\x18\x09",
            b"\x0a\x03\x0a\x01\xff",
            b"",
        ] {
            let e = parse_model_proto(bad, Path::new("t/tokenizer.model")).unwrap_err();
            assert!(e.to_string().starts_with("t/tokenizer.model: "), "{e}");
        }
    }
}
