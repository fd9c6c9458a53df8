//! `kiln perplexity`'s protocol on the real models against llama-perplexity
//! (`../shared/golden/models/perplexity.json`: wikitext-2 test, `-c 512 --chunks 40 -t 2`): the
//! final perplexity must be within 0.5% of llama.cpp's (issue #3). Slow: run with
//! `cargo test --release --test perplexity_golden -- --test-threads=1` (2026-11-27, 2 shared
//! cores: SmolLM2 191 s at load ~2; gemma 1169 s at load ~7).
//!
//! Not bit-exact by design: llama-perplexity's default `-fa auto` turns flash attention on for the
//! CPU, while kiln follows the non-flash path of the logit goldens (`llama-perplexity -fa off`
//! gives kiln's running PPL to its 4 decimals). Measured: SmolLM2 18.9959 vs 19.0292 (−0.18%),
//! gemma 14.6803 vs 14.6938 (−0.09%).

mod common;

use kiln::eval::perplexity::perplexity;
use kiln::model::Model;
use kiln::tokenizer::Tokenizer;
use std::time::Instant;

/// Largest allowed relative difference of the final perplexity (issue #3).
const REL_TOLERANCE: f64 = 0.005;
const N_CTX: usize = 512;
const CHUNKS: usize = 40;

fn check_model(model_name: &str, golden_key: &str) {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::shared_dir().join("golden/models/perplexity.json")).unwrap(),
    )
    .unwrap();
    let want = &golden["results"][golden_key];
    let want_ppl = want["ppl"].as_f64().unwrap();
    let want_running: Vec<f64> = want["running_ppl_by_chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();

    let text = std::fs::read_to_string(common::shared_dir().join("data/wikitext-2-test.txt"))
        .expect("wikitext-2-test.txt");
    let model = Model::load(common::model_path(model_name), 2).unwrap_or_else(|e| panic!("{e}"));
    let tok = Tokenizer::from_gguf(&model.file).unwrap_or_else(|e| panic!("{e}"));
    // llama-perplexity: the whole text with special tokens added, none parsed; each chunk's
    // first token replaced by BOS where the model adds one.
    let tokens = tok.encode(&text, true, false);
    let bos = if tok.add_bos() { tok.bos() } else { None };

    let t0 = Instant::now();
    let mut running = Vec::new();
    let stats = perplexity(&model, &tokens, N_CTX, Some(CHUNKS), bos, |_, s| {
        running.push(s.ppl())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(running.len(), CHUNKS, "{model_name}: chunks scored");

    let worst_chunk = running
        .iter()
        .zip(&want_running)
        .map(|(g, w)| (g / w - 1.0).abs())
        .fold(0f64, f64::max);
    let rel = (stats.ppl() / want_ppl - 1.0).abs();
    eprintln!(
        "{model_name}: PPL {:.4} vs llama.cpp {want_ppl:.4} ({:+.4}%), worst running-PPL \
         difference {:.4}%, {CHUNKS} chunks in {secs:.1} s",
        stats.ppl(),
        (stats.ppl() / want_ppl - 1.0) * 100.0,
        worst_chunk * 100.0
    );
    assert!(
        rel <= REL_TOLERANCE,
        "{model_name}: PPL {} differs from llama.cpp's {want_ppl} by {:.3}%",
        stats.ppl(),
        rel * 100.0
    );
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    check_model(
        "smollm2-135m-instruct-q4_1",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    );
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    check_model("gemma-3-270m-q4_k_m", "gemma-3-270m-q4_k_m.gguf");
}
