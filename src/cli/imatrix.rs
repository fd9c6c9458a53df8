//! `kiln imatrix -m MODEL -f TEXT [-o FILE] [-c 512] [--chunks N] [--in-file F]…
//! [--output-format gguf|dat] [--process-output] [--no-ppl]`: llama-imatrix.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::convert::imatrix::{read, Collector};
use kiln::eval::imatrix::{collect, CollectOptions};

use super::common::{load, read_text, ModelArgs};

/// File format of the importance matrix written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Gguf,
    Dat,
}

#[derive(Args, Debug)]
pub struct ImatrixArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Calibration text (e.g. wikitext-2-valid.txt). Without it, only --in-file files are merged.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long = "output", default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Maximum number of chunks to process (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Importance matrices (GGUF or .dat) to merge with the new statistics (repeatable).
    #[arg(long = "in-file", value_name = "FILE")]
    pub in_file: Vec<PathBuf>,
    /// Output format (default: gguf).
    #[arg(long = "output-format", value_enum)]
    pub output_format: Option<OutputFormat>,
    /// Also collect output.weight.
    #[arg(long = "process-output")]
    pub process_output: bool,
    /// Do not compute the perplexity.
    #[arg(long = "no-ppl")]
    pub no_ppl: bool,
    /// Parse special tokens in the text.
    #[arg(long = "parse-special")]
    pub parse_special: bool,
}

pub fn run(mut args: ImatrixArgs) -> Result<()> {
    let n_ctx = *args.model.ctx.get_or_insert(512);
    if n_ctx < 4 {
        bail!("-c {n_ctx}: the context must be at least 4 tokens");
    }
    let collector = Arc::new(Mutex::new(Collector::new(n_ctx)));
    for f in &args.in_file {
        eprintln!("loading imatrix from '{}'", f.display());
        let file = read(f)?;
        collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(&file, f)?;
    }
    let prompt_file = args.file.as_ref().map(|p| p.display().to_string());
    if let Some(file) = &args.file {
        let (model, tok) = load(&args.model)?;
        let text = read_text(file)?;
        let tokens = tok.encode(&text, true, args.parse_special);
        let all = tokens.len() / n_ctx;
        let n = args.chunks.map_or(all, |c| c.min(all));
        eprintln!(
            "{}: {} tokens, {n} chunks of {n_ctx}, {} threads",
            file.display(),
            tokens.len(),
            model.pool.n_threads()
        );
        let opts = CollectOptions {
            n_ctx,
            max_chunks: args.chunks,
            bos: tok.add_bos().then(|| tok.bos()).flatten(),
            process_output: args.process_output,
            compute_ppl: !args.no_ppl,
        };
        let bar = ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template("{pos}/{len} chunks [{elapsed_precise}<{eta}] {msg}")
                .expect("static template"),
        );
        let stats = collect(&model, &tokens, &opts, &collector, |_, s| {
            bar.inc(1);
            if !args.no_ppl {
                bar.set_message(format!("running PPL {:.4}", s.ppl()));
            }
        })
        .with_context(|| format!("collecting over {}", file.display()))?;
        bar.finish_and_clear();
        if !args.no_ppl {
            println!(
                "Final estimate: PPL = {:.4} +/- {:.5}",
                stats.ppl(),
                stats.ppl_err()
            );
        }
    } else if args.in_file.is_empty() {
        bail!("no text (-f) and no --in-file to combine: nothing to do");
    }
    let c = collector.lock().unwrap_or_else(|e| e.into_inner());
    let format = args.output_format.unwrap_or(OutputFormat::Gguf);
    if format == OutputFormat::Gguf && args.output_format.is_none() {
        let is_gguf = args.output.extension().is_some_and(|e| e == "gguf");
        if !is_gguf {
            eprintln!("warning: saving the GGUF format with a suffix other than .gguf (use --output-format dat for the legacy format)");
        }
    }
    match format {
        OutputFormat::Gguf => c.write_gguf(&args.output, prompt_file.as_deref())?,
        OutputFormat::Dat => c.write_dat(&args.output, prompt_file.as_deref())?,
    }
    eprintln!(
        "{}: {} entries, {} chunks of {n_ctx}",
        args.output.display(),
        c.stats.len(),
        c.last_chunk
    );
    Ok(())
}
