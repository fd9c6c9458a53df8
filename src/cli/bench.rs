//! `kiln bench`: llama-bench's tests and output formats, so the two tools compare directly.
//! pp N: one batch of N prompt tokens from an empty cache; tg N: N tokens generated one at a
//! time from an empty cache. Each test runs once as warm-up, then `-r` timed repetitions; load
//! time is excluded. `-o json` uses llama-bench's field names.

use super::common::{default_threads, describe_threads, write_stdout};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use kiln::model::Model;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Md,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF model file(s).
    #[arg(short = 'm', long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Prompt-processing test sizes (0 to skip).
    #[arg(short = 'p', long = "n-prompt", default_values_t = [512], value_delimiter = ',')]
    pub n_prompt: Vec<usize>,
    /// Generation test sizes (0 to skip).
    #[arg(short = 'n', long = "n-gen", default_values_t = [128], value_delimiter = ',')]
    pub n_gen: Vec<usize>,
    /// Thread counts to test (default: physical cores available to this process).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Md)]
    pub output: Output,
    /// Print progress, the thread choice and the kernels to stderr.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

/// One finished test, in llama-bench's terms.
struct TestResult {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    samples_ns: Vec<u64>,
}

impl TestResult {
    fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns
            .iter()
            .map(|&ns| self.n_tokens() as f64 * 1e9 / ns as f64)
            .collect()
    }

    fn name(&self) -> String {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        }
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Deterministic token ids for the tests (llama-bench uses random ones; content does not
/// change the work).
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % n_vocab) as u32).collect()
}

fn run_test(model: &Model, n_prompt: usize, n_gen: usize) -> Result<u64> {
    let n_vocab = model.config.n_vocab;
    let mut state = model.new_state(n_prompt + n_gen + 1);
    let t0 = Instant::now();
    if n_prompt > 0 {
        model.forward_last(&mut state, &tokens(n_prompt, n_vocab))?;
    }
    let mut t = 1 % n_vocab as u32;
    for _ in 0..n_gen {
        let logits = model.forward_last(&mut state, &[t])?;
        t = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b })
            .0 as u32;
    }
    Ok(t0.elapsed().as_nanos() as u64)
}

/// Bytes and parameter count of the model's tensors, and llama-bench's model description.
fn describe(model: &Model) -> (u64, u64, String) {
    let tensors = model.file.tensors();
    let size = tensors.iter().map(|t| t.size).sum();
    let params = tensors.iter().map(|t| t.n_elements()).sum();
    let get = |k: &str| {
        model
            .file
            .get(k)
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let label = get("general.size_label").unwrap_or_else(|| "?B".into());
    let ftype = model
        .file
        .get("general.file_type")
        .and_then(|v| v.as_u64())
        .map_or_else(|| "?".into(), |f| format!("ftype {f}"));
    (
        size,
        params,
        format!("{} {label} {ftype}", model.config.arch.name()),
    )
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    let threads = if args.threads.is_empty() {
        vec![default_threads()]
    } else {
        args.threads.clone()
    };
    if args.verbose {
        eprintln!(
            "kernels: {}; {}",
            kiln::kernels::active_isa(),
            describe_threads()
        );
    }
    let mut results = Vec::new();
    for path in &args.models {
        for &nt in &threads {
            let model =
                Model::load(path, nt).with_context(|| format!("cannot load {}", path.display()))?;
            let (model_size, model_n_params, model_type) = describe(&model);
            let tests = args.n_prompt.iter().filter(|&&p| p > 0).map(|&p| (p, 0));
            let tests = tests.chain(args.n_gen.iter().filter(|&&g| g > 0).map(|&g| (0, g)));
            for (n_prompt, n_gen) in tests {
                if n_prompt + n_gen + 1 > model.config.n_ctx_train.max(n_prompt + n_gen + 1) {
                    bail!("test too long for the model");
                }
                run_test(&model, n_prompt.min(32), n_gen.min(1))?; // warm-up
                let mut samples_ns = Vec::with_capacity(args.reps);
                for rep in 0..args.reps {
                    if args.verbose {
                        eprintln!(
                            "{}: pp{n_prompt} tg{n_gen} rep {}/{}",
                            path.display(),
                            rep + 1,
                            args.reps
                        );
                    }
                    samples_ns.push(run_test(&model, n_prompt, n_gen)?);
                }
                let r = TestResult {
                    model_filename: path.display().to_string(),
                    model_type: model_type.clone(),
                    model_size,
                    model_n_params,
                    n_threads: nt,
                    n_prompt,
                    n_gen,
                    samples_ns,
                };
                if let Output::Md = args.output {
                    // Rows appear as tests finish, as llama-bench's do.
                    let header = if results.is_empty() {
                        md_header()
                    } else {
                        String::new()
                    };
                    write_stdout(&(header + &md_row(&r)))?;
                }
                results.push(r);
            }
        }
    }
    match args.output {
        Output::Md => {}
        Output::Json => {
            let list: Vec<_> = results.iter().map(to_json).collect();
            write_stdout(&(serde_json::to_string_pretty(&list)? + "\n"))?
        }
        Output::Csv => write_stdout(&csv(&results))?,
    }
    if args.verbose {
        eprintln!(
            "peak RSS: {:.1} MiB",
            peak_rss_bytes() as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn md_header() -> String {
    format!(
        "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |\n\
         | {:-<30} | {:->9}: | {:->9}: | {:-<10} | {:->6}: | {:->14}: | {:->19}: |\n",
        "model", "size", "params", "backend", "threads", "test", "t/s", "", "", "", "", "", "", ""
    )
}

fn md_row(r: &TestResult) -> String {
    let (mean, std) = mean_std(&r.samples_ts());
    format!(
        "| {:<30} | {:>6.2} MiB | {:>8.2} M | {:<10} | {:>7} | {:>15} | {:>20} |\n",
        r.model_type,
        r.model_size as f64 / (1 << 20) as f64,
        r.model_n_params as f64 / 1e6,
        "CPU",
        r.n_threads,
        r.name(),
        format!("{mean:.2} ± {std:.2}")
    )
}

fn to_json(r: &TestResult) -> serde_json::Value {
    let ts = r.samples_ts();
    let (avg_ts, stddev_ts) = mean_std(&ts);
    let ns: Vec<f64> = r.samples_ns.iter().map(|&n| n as f64).collect();
    let (avg_ns, stddev_ns) = mean_std(&ns);
    json!({
        "build_commit": env!("CARGO_PKG_VERSION"),
        "build_number": 0,
        "cpu_info": cpu_name(),
        "gpu_info": "",
        "backends": "CPU",
        "model_filename": r.model_filename,
        "model_type": r.model_type,
        "model_size": r.model_size,
        "model_n_params": r.model_n_params,
        "n_batch": 2048,
        "n_ubatch": 512,
        "n_threads": r.n_threads,
        "type_k": "f16",
        "type_v": "f16",
        "n_gpu_layers": 0,
        "flash_attn": 0,
        "embeddings": false,
        "n_prompt": r.n_prompt,
        "n_gen": r.n_gen,
        "n_depth": 0,
        "test_time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "avg_ns": avg_ns.round() as u64,
        "stddev_ns": stddev_ns.round() as u64,
        "avg_ts": avg_ts,
        "stddev_ts": stddev_ts,
        "samples_ns": r.samples_ns,
        "samples_ts": ts,
    })
}

fn csv(results: &[TestResult]) -> String {
    let mut out = String::from(
        "model_filename,model_type,model_size,model_n_params,n_threads,n_prompt,n_gen,avg_ns,stddev_ns,avg_ts,stddev_ts\n",
    );
    for r in results {
        let (avg_ts, stddev_ts) = mean_std(&r.samples_ts());
        let ns: Vec<f64> = r.samples_ns.iter().map(|&n| n as f64).collect();
        let (avg_ns, stddev_ns) = mean_std(&ns);
        out += &format!(
            "\"{}\",\"{}\",{},{},{},{},{},{},{},{:.6},{:.6}\n",
            r.model_filename,
            r.model_type,
            r.model_size,
            r.model_n_params,
            r.n_threads,
            r.n_prompt,
            r.n_gen,
            avg_ns.round(),
            stddev_ns.round(),
            avg_ts,
            stddev_ts
        );
    }
    out
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .map(|kb| kb * 1024)
            })
        })
        .unwrap_or(0)
}
