//! `kiln run`: complete a prompt, streaming the continuation to stdout and timings to stderr.

use super::common::{context_size, load, ModelArgs, SamplingArgs};
use anyhow::{bail, Result};
use clap::Args;
use kiln::sample::Sampler;
use std::io::Write;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let (model, tok) = load(&args.model)?;
    let n_ctx = context_size(&args.model, &model);
    let prompt = tok.encode(&args.prompt, true, true);
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens, more than the context size {n_ctx} allows (-c)",
            prompt.len()
        );
    }
    let mut state = model.new_state(n_ctx);
    let mut sampler = Sampler::new(args.sampling.config());
    for &t in &prompt {
        sampler.accept(t);
    }

    let t0 = Instant::now();
    let mut logits = model.forward_last(&mut state, &prompt)?;
    let t_prompt = t0.elapsed();

    let mut out = std::io::stdout().lock();
    let mut decoder = tok.stream_decoder();
    let budget = args.n_predict.min(n_ctx - prompt.len());
    let t1 = Instant::now();
    let mut generated = 0;
    while generated < budget {
        let next = sampler.sample(&logits);
        sampler.accept(next);
        generated += 1;
        if tok.is_eog(next) {
            break;
        }
        out.write_all(decoder.push(next).as_bytes())?;
        out.flush()?;
        if generated == budget {
            break;
        }
        logits = model.forward_last(&mut state, &[next])?;
    }
    out.write_all(decoder.flush().as_bytes())?;
    writeln!(out)?;
    let t_gen = t1.elapsed();
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tokens/s) | generation: {} tokens in {:.2} s ({:.1} tokens/s)",
        prompt.len(),
        t_prompt.as_secs_f64(),
        prompt.len() as f64 / t_prompt.as_secs_f64(),
        generated,
        t_gen.as_secs_f64(),
        generated as f64 / t_gen.as_secs_f64().max(1e-9),
    );
    Ok(())
}
