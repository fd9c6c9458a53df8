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

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
