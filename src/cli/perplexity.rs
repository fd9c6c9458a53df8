//! `kiln perplexity`: llama-perplexity's protocol on a text file.

use super::common::{load, read_text, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use kiln::eval::perplexity::{n_chunks, perplexity};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score (e.g. wikitext-2-test.txt).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Maximum number of chunks to score (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
}

pub fn run(mut args: PerplexityArgs) -> Result<()> {
    let n_ctx = *args.model.ctx.get_or_insert(512);
    let (model, tok) = load(&args.model)?;
    let text = read_text(&args.file)?;
    let t0 = Instant::now();
    let tokens = tok.encode(&text, true, false);
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let n = n_chunks(tokens.len(), n_ctx, args.chunks);
    if n == 0 {
        bail!(
            "{}: {} tokens is less than one chunk of {n_ctx} (use a smaller -c)",
            args.file.display(),
            tokens.len()
        );
    }
    eprintln!(
        "{}: {} tokens, {n} chunks of {n_ctx}, {} threads (tokenized in {:.2} s)",
        args.file.display(),
        tokens.len(),
        model.pool.n_threads(),
        t0.elapsed().as_secs_f64()
    );
    let tty = std::io::stderr().is_terminal();
    let t1 = Instant::now();
    let stats = perplexity(&model, &tokens, n_ctx, Some(n), bos, |i, s| {
        let eta = t1.elapsed().as_secs_f64() / (i + 1) as f64 * (n - i - 1) as f64;
        if tty {
            eprint!(
                "\r[{}/{n}] running PPL {:.4}  (ETA {:.0} s)   ",
                i + 1,
                s.ppl(),
                eta
            );
        } else {
            eprintln!("[{}/{n}] {:.4}", i + 1, s.ppl());
        }
    })?;
    if tty {
        eprintln!();
    }
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        stats.ppl(),
        stats.ppl_err()
    );
    eprintln!(
        "scored {} tokens in {:.1} s ({:.1} tokens/s evaluated)",
        stats.count,
        t1.elapsed().as_secs_f64(),
        (n * n_ctx) as f64 / t1.elapsed().as_secs_f64()
    );
    Ok(())
}
