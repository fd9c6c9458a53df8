//! Options and helpers shared by the commands that run a model.

use anyhow::{Context, Result};
use clap::Args;
use kiln::model::Model;
use kiln::sample::{SamplerConfig, DEFAULT_SEED};
use kiln::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// `-m`, `-c`, `-t`: which model, how much context, how many threads.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Context size in tokens (default: the model's training context, capped at 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Worker threads (default: available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

/// Sampling flags, named and defaulted as in llama.cpp.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty on recently seen tokens (1.0 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Random seed (default: a random one, printed with -v).
    #[arg(long)]
    pub seed: Option<u32>,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            min_keep: 0,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            penalty_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed.unwrap_or(DEFAULT_SEED),
        }
    }
}

/// Threads to use by default: one per physical core this process may run on (SMT siblings
/// share the core's SIMD units, so they add little to matmuls), capped by
/// `available_parallelism` (which honours the affinity mask and cgroup CPU quotas).
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(logical, |p| p.min(logical)).max(1)
}

/// One line for `-v`: how the thread count was chosen.
pub fn describe_threads() -> String {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    match physical_cores() {
        Some(p) => format!(
            "default threads {} ({p} physical cores in the affinity mask, {logical} CPUs available)",
            default_threads()
        ),
        None => format!("default threads {} (CPUs available; core topology unknown)", default_threads()),
    }
}

/// Distinct (package, core) pairs among the CPUs this process may run on (Linux sysfs).
fn physical_cores() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .to_string();
    let mut cores = std::collections::HashSet::new();
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => (part.parse::<usize>().ok()?, part.parse::<usize>().ok()?),
        };
        for cpu in lo..=hi {
            let topo = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            let read = |f: &str| {
                std::fs::read_to_string(format!("{topo}/{f}"))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            cores.insert((read("physical_package_id")?, read("core_id")?));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// Loads the model and its tokenizer, with errors that name the file.
pub fn load(args: &ModelArgs) -> Result<(Model, Tokenizer)> {
    let threads = args.threads.unwrap_or_else(default_threads);
    let model = Model::load(&args.model, threads)
        .with_context(|| format!("cannot load model {}", args.model.display()))?;
    let tok = Tokenizer::from_gguf(&model.file)
        .with_context(|| format!("cannot build the tokenizer of {}", args.model.display()))?;
    Ok((model, tok))
}

/// The context size to use: requested, else the training context capped at 4096.
pub fn context_size(args: &ModelArgs, model: &Model) -> usize {
    args.ctx
        .unwrap_or(model.config.n_ctx_train.min(4096))
        .max(1)
}

/// Reads a text file with a clear error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to stdout and flushes; a closed pipe (`kiln … | head`) is not an error.
pub fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
