//! The real models: every `tokenize` case of `shared/golden/models/*.json` (llama.cpp's ids,
//! with and without BOS / special-token parsing) must match, and decoding must give the
//! text back. The models come from `models/fetch.py`; a missing model fails the test.

use std::time::Instant;

use kiln::ggml_compat::gguf::GgufFile;
use kiln::tokenizer::Tokenizer;

mod common;
#[path = "tokenizer/oracle.rs"]
mod oracle;

use common::model_path;

const SMOLLM2: &str = "smollm2-135m-instruct-q4_1";
const GEMMA3: &str = "gemma-3-270m-q4_k_m";

fn load(name: &str) -> Tokenizer {
    let file = GgufFile::open(model_path(name)).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name}: tokenizer built in {:?} ({} tokens)",
        start.elapsed(),
        tok.n_vocab()
    );
    tok
}

struct Case {
    text: String,
    add_bos: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

fn golden_cases(name: &str) -> Vec<Case> {
    let path = format!(
        "{}/../shared/golden/models/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: serde_json::Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cases = json["tokenize"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no tokenize array"));
    cases
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_owned(),
            add_bos: c["add_bos"].as_bool().expect("add_bos"),
            parse_special: c["parse_special"].as_bool().expect("parse_special"),
            ids: c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect(),
        })
        .collect()
}

/// The prompts of the logits goldens: their ids (BOS as the metadata asks, special tokens
/// parsed) and the text of the greedy continuation.
fn check_prompts(name: &str, tok: &Tokenizer) {
    let path = format!(
        "{}/../shared/golden/models/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: serde_json::Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    let prompts = json["prompts"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no prompts"));
    assert!(!prompts.is_empty());
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    for p in prompts {
        let prompt = p["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(prompt, true, true),
            ids(&p["ids"]),
            "{name}: prompt {prompt:?}"
        );
        let greedy = ids(&p["greedy_ids"]);
        let text = p["greedy_text"].as_str().expect("greedy_text");
        assert_eq!(tok.decode(&greedy), text, "{name}: greedy text");
        let mut stream = tok.stream_decoder();
        let mut streamed: String = greedy.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.flush());
        assert_eq!(streamed, text, "{name}: streamed greedy text");
    }
}

fn check_golden(name: &str, tok: &Tokenizer) {
    let cases = golden_cases(name);
    assert!(cases.len() >= 20, "{name}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let got = tok.encode(&c.text, c.add_bos, c.parse_special);
        if got != c.ids {
            failures.push(format!(
                "{:?} add_bos={} parse_special={}\n   want {:?}\n    got {:?}",
                c.text, c.add_bos, c.parse_special, c.ids, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// decode(encode(text)) == text, both through `decode` and token by token through the
/// streaming decoder. Both models keep every byte: SmolLM2's pre-tokenizer (smollm) turns
/// `clean_spaces` off and Gemma has no prefix space to strip.
fn check_round_trip(name: &str, tok: &Tokenizer) {
    for c in golden_cases(name) {
        for parse_special in [false, true] {
            let ids = tok.encode(&c.text, false, parse_special);
            assert_eq!(
                tok.decode(&ids),
                c.text,
                "{name}: decode, parse_special={parse_special}"
            );
            let mut stream = tok.stream_decoder();
            let mut streamed = String::new();
            for &id in &ids {
                let part = stream.push(id);
                assert!(
                    !part.contains('\u{FFFD}'),
                    "{name}: stream emitted a partial character"
                );
                streamed.push_str(&part);
            }
            streamed.push_str(&stream.flush());
            assert_eq!(
                streamed, c.text,
                "{name}: stream, parse_special={parse_special}"
            );
        }
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    let tok = load(SMOLLM2);
    check_golden(SMOLLM2, &tok);
    check_prompts(SMOLLM2, &tok);
    check_round_trip(SMOLLM2, &tok);
    oracle::check("smollm2", &tok);
    assert!(!tok.add_bos());
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    let id = |t: &str| {
        tok.vocab()
            .text_to_token(t)
            .unwrap_or_else(|| panic!("{t} missing"))
    };
    assert!(tok.is_eog(id("<|im_end|>")));
    assert!(tok.is_eog(id("<|endoftext|>")));
    assert!(!tok.is_eog(id("<|im_start|>")));
    // both <|endoftext|> and <|im_end|> are EOT candidates; llama.cpp's hash map yields
    // <|endoftext|> first
    assert_eq!(tok.eot(), Some(id("<|endoftext|>")));
    assert_eq!(tok.token_to_piece(id("Ġworld")), b" world");
}

#[test]
fn gemma3_matches_llama_cpp() {
    let tok = load(GEMMA3);
    check_golden(GEMMA3, &tok);
    check_prompts(GEMMA3, &tok);
    check_round_trip(GEMMA3, &tok);
    oracle::check("gemma3", &tok);
    assert!(tok.add_bos());
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    let id = |t: &str| {
        tok.vocab()
            .text_to_token(t)
            .unwrap_or_else(|| panic!("{t} missing"))
    };
    assert!(tok.is_eog(id("<end_of_turn>")));
    assert!(tok.is_eog(id("<eos>")));
    assert!(!tok.is_eog(id("<start_of_turn>")));
    assert_eq!(tok.eot(), Some(id("<end_of_turn>")));
    assert_eq!(tok.token_to_piece(id("<0x0A>")), b"\n");
    assert_eq!(tok.token_to_piece(id("▁world")), b" world");
    // control tokens render only when asked
    assert_eq!(tok.token_to_piece_special(id("<end_of_turn>"), false), b"");
    assert_eq!(tok.token_to_piece(id("<end_of_turn>")), b"<end_of_turn>");
}

/// A 262k-token vocabulary must build without quadratic work (well under a second in
/// release; the bound here leaves room for the test profile on a shared machine).
#[test]
fn gemma3_tokenizer_builds_fast() {
    let file = GgufFile::open(model_path(GEMMA3)).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    assert_eq!(tok.n_vocab(), 262144);
    assert!(
        took.as_secs_f64() < 5.0,
        "building the gemma tokenizer took {took:?}"
    );
}
