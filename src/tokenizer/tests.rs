//! Unit tests on small hand-made vocabularies (the real ones are in tests/tokenizer_*.rs).

use super::*;

/// An SPM vocabulary: <unk> <s> </s>, 256 byte tokens, then `normal` (text, score) pairs
/// and `user` user-defined tokens.
fn spm(normal: &[(&str, f32)], user: &[&str], name: &str) -> Tokenizer {
    let mut spec = VocabSpec {
        model: "llama".into(),
        name: Some(name.into()),
        ..VocabSpec::default()
    };
    let mut types = vec![2, 3, 3];
    spec.tokens = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    for b in 0..=255u32 {
        spec.tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for (t, _) in normal {
        spec.tokens.push((*t).into());
        types.push(1);
    }
    for t in user {
        spec.tokens.push((*t).into());
        types.push(4);
    }
    let mut scores = vec![0.0; 259];
    scores.extend(normal.iter().map(|&(_, s)| s));
    scores.resize(spec.tokens.len(), 0.0);
    spec.scores = Some(scores);
    spec.token_types = Some(types);
    Tokenizer::new(Vocab::from_spec(spec).expect("valid spec"))
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.vocab()
        .text_to_token(text)
        .unwrap_or_else(|| panic!("{text} missing"))
}

#[test]
fn spm_merges_by_score_and_falls_back_to_bytes() {
    let tok = spm(
        &[
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("ab", -3.0),
            ("▁a", -0.5),
        ],
        &[],
        "t",
    );
    // "▁ab": "▁a" (score -0.5) wins over "ab" (-3); "▁ab" is no token
    assert_eq!(
        tok.encode("ab", false, false),
        [id(&tok, "▁a"), id(&tok, "b")]
    );
    assert_eq!(
        tok.encode("ab", true, false),
        [1, id(&tok, "▁a"), id(&tok, "b")]
    );
    // é is not in the vocabulary: its two UTF-8 bytes
    assert_eq!(
        tok.encode("é", false, false),
        [id(&tok, "▁"), 3 + 0xC3, 3 + 0xA9]
    );
    assert_eq!(tok.decode(&tok.encode("ab é", false, false)), "ab é");
}

#[test]
fn special_tokens_split_only_when_parsed_user_defined_always() {
    let tok = spm(&[("▁", -1.0), ("a", -2.0)], &["<|user|>"], "t");
    let user = id(&tok, "<|user|>");
    // </s> is control: text unless parse_special
    let plain = tok.encode("a</s>", false, false);
    assert!(!plain.contains(&2));
    assert_eq!(
        tok.encode("a</s>", false, true),
        [id(&tok, "▁"), id(&tok, "a"), 2]
    );
    // user-defined tokens are always matched; the text after a special token gets the
    // SPM prefix space again
    assert_eq!(
        tok.encode("<|user|>a", false, false),
        [user, id(&tok, "▁"), id(&tok, "a")]
    );
}

#[test]
fn phi3_special_tokens_strip_whitespace_on_the_right() {
    let tok = spm(&[("▁", -1.0), ("a", -2.0)], &["<|user|>"], "Phi3");
    let user = id(&tok, "<|user|>");
    assert_ne!(tok.vocab().token_attr(user) & attr::RSTRIP, 0);
    assert_eq!(
        tok.vocab().token_attr(1) & attr::RSTRIP,
        0,
        "<s> keeps its whitespace"
    );
    assert_eq!(
        tok.encode("<|user|> \n a", false, false),
        [user, id(&tok, "▁"), id(&tok, "a")]
    );
}

#[test]
fn detokenize_prefix_space_and_bos_like_llama_cpp() {
    let tok = spm(&[("▁", -1.0), ("a", -2.0), ("▁a", -0.5)], &[], "t");
    let ids = tok.encode("a", true, false);
    assert_eq!(ids, [1, id(&tok, "▁a")]);
    // llama.cpp only strips the prefix space when no BOS was removed before it
    assert_eq!(tok.detokenize(&ids, true, false), b" a");
    assert_eq!(tok.detokenize(&ids[1..], true, false), b"a");
    assert_eq!(tok.detokenize(&ids, false, true), b"<s> a");
    assert_eq!(tok.detokenize(&ids, false, false), b" a");
}

#[test]
fn stream_decoder_holds_partial_utf8() {
    let tok = spm(&[("▁", -1.0)], &[], "t");
    let mut s = tok.stream_decoder();
    assert_eq!(s.push(3 + 0xE4), "");
    assert_eq!(s.push(3 + 0xB8), "");
    assert_eq!(s.push(3 + 0xAD), "中");
    assert_eq!(s.push(3 + b'x' as u32), "x");
    // a byte that can never start a character is replaced at once
    assert_eq!(s.push(3 + 0xFF), "\u{FFFD}");
    assert_eq!(s.push(3 + 0xC3), "");
    assert_eq!(s.flush(), "\u{FFFD}");
}

#[test]
fn clean_spaces_matches_llama_cpp_passes() {
    let mut t = b"a , b ' c it 's I 'm we 're don 't".to_vec();
    clean_spaces(&mut t);
    assert_eq!(t, b"a, b'c it's I'm we're don 't");
}

#[test]
fn bpe_requires_merges_and_a_known_pre_tokenizer() {
    let mut spec = VocabSpec {
        model: "gpt2".into(),
        tokens: vec!["a".into()],
        ..VocabSpec::default()
    };
    assert!(matches!(
        Vocab::from_spec(spec.clone()),
        Err(TokenizerError::MissingKey { .. })
    ));
    spec.merges = Some(vec![]);
    spec.pre = Some("no-such-pre".into());
    assert!(matches!(
        Vocab::from_spec(spec.clone()),
        Err(TokenizerError::UnsupportedPre(_))
    ));
    spec.pre = Some("qwen2".into());
    let v = Vocab::from_spec(spec.clone()).expect("valid");
    assert_eq!(
        (v.bos, v.eos),
        (None, None),
        "default id 11 is out of range"
    );
}
