//! llama.cpp's tokenizer test suite (`tests/test-tokenizer-0`): every text of
//! `shared/vocab/ggml-vocab-NAME.gguf.inp`, tokenized without BOS/EOS and without parsing
//! special tokens, must give the ids of the matching line of `.out`.

use std::path::PathBuf;

use kiln::ggml_compat::gguf::GgufFile;
use kiln::tokenizer::{Tokenizer, Vocab, VocabSpec};

#[path = "tokenizer/oracle.rs"]
mod oracle;

fn vocab_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vocab")
}

/// The texts of an `.inp` file: each is followed by the line `__ggml_vocab_test__`.
fn read_inputs(path: &std::path::Path) -> Vec<String> {
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut texts: Vec<String> = raw
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_owned)
        .collect();
    assert_eq!(
        texts.pop().as_deref(),
        Some(""),
        "{}: must end with the separator",
        path.display()
    );
    texts
}

fn read_outputs(path: &std::path::Path) -> Vec<Vec<u32>> {
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse().expect("token id"))
                .collect()
        })
        .collect()
}

fn check_vocab(name: &str) {
    let gguf = vocab_dir().join(format!("ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(&gguf).unwrap_or_else(|e| panic!("{e}"));
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", gguf.display()));
    let inputs = read_inputs(&gguf.with_extension("gguf.inp"));
    let outputs = read_outputs(&gguf.with_extension("gguf.out"));
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the number of texts"
    );
    assert!(inputs.len() > 30, "{name}: only {} texts", inputs.len());
    let mut failures = Vec::new();
    for (text, want) in inputs.iter().zip(&outputs) {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} texts differ:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
    check_round_trip(name, &tok, &inputs);
    oracle::check(name, &tok);
}

/// decode(encode(text)) == text wherever llama.cpp's detokenizer keeps every byte: always
/// without `clean_spaces`; with it, for texts that have no space before ? ! . , or '.
fn check_round_trip(name: &str, tok: &Tokenizer, inputs: &[String]) {
    let clean = tok.vocab().clean_spaces;
    let mut checked = 0;
    for text in inputs {
        let back = tok.decode(&tok.encode(text, false, false));
        if clean
            && [" ?", " !", " .", " ,", " '"]
                .iter()
                .any(|p| text.contains(p))
        {
            continue;
        }
        assert_eq!(&back, text, "{name}: round trip");
        checked += 1;
    }
    assert!(checked >= 40, "{name}: only {checked} round trips checked");
    if clean {
        let text = "Hello, y'all! How are you 😁 ?我想";
        let want = "Hello, y'all! How are you 😁?我想";
        assert_eq!(
            tok.decode(&tok.encode(text, false, false)),
            want,
            "{name}: clean_spaces"
        );
    }
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { check_vocab($name); })*

        /// Every vocabulary with test texts has a test above.
        #[test]
        fn every_vocab_with_texts_is_tested() {
            let tested = [$($name),*];
            for entry in std::fs::read_dir(vocab_dir()).expect("shared/vocab") {
                let file = entry.expect("dir entry").file_name().into_string().expect("utf-8 name");
                if let Some(name) = file.strip_prefix("ggml-vocab-").and_then(|f| f.strip_suffix(".gguf.inp")) {
                    assert!(tested.contains(&name), "no test for ggml-vocab-{name}");
                }
            }
        }
    };
}

vocab_tests! {
    deepseek_coder => "deepseek-coder",
    falcon => "falcon",
    gpt_2 => "gpt-2",
    llama_bpe => "llama-bpe",
    llama_spm => "llama-spm",
    mpt => "mpt",
    phi_3 => "phi-3",
    refact => "refact",
    starcoder => "starcoder",
}

/// gpt-neox has no test texts; it must still load (no `tokenizer.ggml.pre`: the default
/// pre-tokenizer) and round-trip plain text.
#[test]
fn gpt_neox_loads_with_default_pre_tokenizer() {
    let file = GgufFile::open(vocab_dir().join("ggml-vocab-gpt-neox.gguf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tok.vocab().pre,
        Some(kiln::tokenizer::PreTokenizer::Default)
    );
    let text = "Hello world, 12345 (test)";
    assert_eq!(tok.decode(&tok.encode(text, false, false)), text);
    oracle::check("gpt-neox", &tok);
}

/// Every pre-tokenizer family on a real 128k BPE vocabulary: llama-bpe's vocabulary with
/// `tokenizer.ggml.pre` replaced (or removed), against llama.cpp on the same files.
#[test]
fn llama_bpe_vocab_under_every_pre_tokenizer() {
    let file = GgufFile::open(vocab_dir().join("ggml-vocab-llama-bpe.gguf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = VocabSpec::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    for pre in [
        "qwen2",
        "smollm",
        "deepseek-coder",
        "falcon",
        "starcoder",
        "gpt-2",
        "default",
        "chatglm-bpe",
        "dbrx",
        "command-r",
        "megrez",
        "trillion",
        "stablelm2",
        "qwen35",
        "none",
        "deepseek-llm",
        "deepseek-v3",
        "spark2_5",
        "youtu",
        "tekken",
        "gpt-4o",
        "jais-2",
        "poro-chat",
        "bloom",
        "viking",
        "chameleon",
        "bailingmoe",
        "seed-coder",
        "ufakzeka",
        "grok-2",
        "exaone-moe",
        "minicpm5",
        "laguna",
        "glm4",
    ] {
        let mut spec = base.clone();
        spec.pre = (pre != "none").then(|| pre.to_string());
        let tok = Tokenizer::new(Vocab::from_spec(spec).unwrap_or_else(|e| panic!("{pre}: {e}")));
        oracle::check(&format!("llama-bpe-as-{pre}"), &tok);
    }
}

/// SPM without the prefix space and with EOS added (llama-spm's vocabulary with
/// `add_space_prefix = false`, `add_eos_token = true`), against llama.cpp on the same file.
#[test]
fn llama_spm_vocab_without_prefix_space_with_eos() {
    let file = GgufFile::open(vocab_dir().join("ggml-vocab-llama-spm.gguf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = VocabSpec::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    spec.flags.insert("add_space_prefix".into(), false);
    spec.flags.insert("add_eos_token".into(), true);
    let tok = Tokenizer::new(Vocab::from_spec(spec).unwrap_or_else(|e| panic!("{e}")));
    oracle::check("llama-spm-no-prefix-add-eos", &tok);
}
