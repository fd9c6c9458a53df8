//! Calibrated quantization end to end on the real SmolLM2 (as F16): the driver's output files
//! are ordinary GGUF files kiln runs, hold exactly the calibrated bytes, and GPTQ / AWQ beat
//! plain rounding on the text they were calibrated on.

mod common;

use std::path::{Path, PathBuf};

use ggml_compat::gguf::GgufFile;
use indicatif::ProgressBar;
use kiln::calib::run::{self, CalibOptions, Method};
use kiln::convert::imatrix::Imatrix;
use kiln::convert::quantize::{
    plan_tensors, quantize_file, QuantizeParams, Replacement, TensorPlan,
};
use kiln::convert::recipe::Ftype;
use kiln::eval::perplexity::perplexity;
use kiln::model::Model;

const N_CTX: usize = 128;
const CHUNKS: usize = 3;

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("calib");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn params(ftype: &str) -> QuantizeParams {
    QuantizeParams {
        ftype: Ftype::from_name(ftype).unwrap(),
        overrides: Vec::new(),
        pure: false,
        allow_requantize: true,
        imatrix: None,
        threads: 2,
        replacements: Default::default(),
    }
}

/// The shipped Q4_1 SmolLM2 as F16 (what calibration starts from), made once per test run.
fn f16_source() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let out = tmp("smollm2.F16.gguf");
        let src = common::model_path("smollm2-135m-instruct-q4_1");
        quantize_file(&src, &out, &params("F16"), &ProgressBar::hidden()).unwrap();
        out
    })
    .clone()
}

fn calib_text() -> String {
    let t = std::fs::read_to_string(common::shared_dir().join("data/wikitext-2-valid.txt"))
        .expect("shared/data/wikitext-2-valid.txt");
    t.chars().take(20_000).collect()
}

fn opts(method: Method) -> CalibOptions {
    CalibOptions {
        method,
        n_ctx: N_CTX,
        chunks: CHUNKS,
        threads: 2,
        awq_samples: 256,
        gptq_damp: 0.01,
    }
}

/// Quantizes the F16 source to `ftype` with `method`; returns the output path and the plan.
/// `tag` keeps the outputs of tests running in parallel apart.
fn quantize(
    tag: &str,
    method: Method,
    ftype: &str,
) -> (PathBuf, Vec<TensorPlan>, Option<run::Calibration>) {
    let src = f16_source();
    let out = tmp(&format!("{tag}.{method:?}.{ftype}.gguf"));
    let mut p = params(ftype);
    let mut cal = None;
    if method != Method::Rtn {
        p.imatrix = Some((Imatrix::default(), "calib".into()));
        let file = GgufFile::open(&src).unwrap();
        let (plans, _, _) = plan_tensors(&file, &p).unwrap();
        let (mut model, chunks, _) =
            run::load(&src, &calib_text(), "calib", &opts(method)).unwrap();
        let c = run::calibrate(
            &mut model,
            &chunks,
            &plans,
            &opts(method),
            &ProgressBar::hidden(),
        )
        .unwrap();
        p.replacements = c.replacements.clone();
        p.imatrix = Some((c.imatrix.clone(), "calib".into()));
        cal = Some(c);
    }
    let summary = quantize_file(&src, &out, &p, &ProgressBar::hidden()).unwrap();
    (out, summary.tensors, cal)
}

/// Perplexity of `path` on the calibration chunks.
fn ppl_on_calib(path: &Path) -> f64 {
    let model = Model::load(path, 2).unwrap();
    let tok = kiln::tokenizer::Tokenizer::from_gguf(&model.file).unwrap();
    let chunks = run::chunks(&tok, &calib_text(), "calib", N_CTX, CHUNKS).unwrap();
    let tokens: Vec<u32> = chunks.concat();
    perplexity(&model, &tokens, N_CTX, None, tok.bos(), |_, _| {})
        .unwrap()
        .ppl()
}

fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap();
    let t = f.tensor(name).unwrap();
    f.tensor_data(t).to_vec()
}

#[test]
fn gptq_writes_its_bytes_and_beats_rtn_on_its_calibration_text() {
    let (rtn, _, _) = quantize("gptq", Method::Rtn, "Q4_0");
    let (gptq, plans, cal) = quantize("gptq", Method::Gptq, "Q4_0");
    let cal = cal.unwrap();
    // every layer matrix was calibrated, and the file holds exactly those bytes
    let mut differ = 0;
    let mut n = 0;
    for p in plans.iter().filter(|p| p.name.starts_with("blk.")) {
        match cal.replacements.get(&p.name) {
            Some(Replacement::Quantized { ty, bytes }) => {
                assert_eq!(*ty, p.to, "{}", p.name);
                assert_eq!(&tensor_bytes(&gptq, &p.name), bytes, "{}", p.name);
                n += 1;
                differ += (tensor_bytes(&rtn, &p.name) != *bytes) as usize;
            }
            Some(Replacement::Values(_)) => panic!("GPTQ alone replaced the values of {}", p.name),
            None => assert!(p.name.ends_with("norm.weight"), "{} not calibrated", p.name),
        }
    }
    assert_eq!(n, 30 * 7);
    assert_eq!(differ, n, "GPTQ should change every matrix");
    let (p_rtn, p_gptq) = (ppl_on_calib(&rtn), ppl_on_calib(&gptq));
    eprintln!("calibration-text PPL: rtn {p_rtn:.3}, gptq {p_gptq:.3}");
    assert!(p_gptq < p_rtn, "GPTQ {p_gptq} vs RTN {p_rtn}");
}

#[test]
fn awq_folds_into_the_norms_and_beats_rtn_on_its_calibration_text() {
    let (rtn, _, _) = quantize("awq", Method::Rtn, "Q4_0");
    let (awq, _, cal) = quantize("awq", Method::Awq, "Q4_0");
    let cal = cal.unwrap();
    let src = f16_source();
    // every norm is written as folded (exactly the replacement values); AWQ may keep s = 1
    // (α = 0) for a group, but not for all of them
    let mut changed = 0;
    for il in 0..30 {
        for norm in ["attn_norm", "ffn_norm"] {
            let name = format!("blk.{il}.{norm}.weight");
            let Some(Replacement::Values(v)) = cal.replacements.get(&name) else {
                panic!("{name} not replaced");
            };
            let written = tensor_bytes(&awq, &name);
            assert!(written == bytemuck::cast_slice::<f32, u8>(v), "{name}");
            changed += (written != tensor_bytes(&src, &name)) as usize;
        }
    }
    eprintln!("AWQ changed {changed} of 60 norms");
    assert!(changed > 0, "AWQ kept every scale at 1");
    let (p_rtn, p_awq) = (ppl_on_calib(&rtn), ppl_on_calib(&awq));
    eprintln!("calibration-text PPL: rtn {p_rtn:.3}, awq {p_awq:.3}");
    assert!(p_awq < p_rtn, "AWQ {p_awq} vs RTN {p_rtn}");
}

#[test]
fn calibration_text_shorter_than_a_chunk_is_a_clear_error() {
    let src = f16_source();
    let err = run::load(&src, "just a few words", "tiny.txt", &opts(Method::Gptq))
        .err()
        .expect("too short");
    let msg = err.to_string();
    assert!(msg.contains("tiny.txt") && msg.contains("chunk"), "{msg}");
}
