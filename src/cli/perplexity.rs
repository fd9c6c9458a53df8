//! `kiln perplexity`: llama-perplexity's protocol on a text file, and its KL-divergence mode
//! (`--kld-base FILE` writes the base log-probabilities; `--kld-base FILE --kld` or
//! `--kld-ref MODEL` scores the model against them).

use super::common::{load, read_text, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln::eval::kld::{kl_divergence, write_base, Base, BaseReader, KldStats};
use kiln::eval::perplexity::{n_chunks, perplexity, ChunkEval, PplStats};
use kiln::model::Model;
use kiln::tokenizer::Tokenizer;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score (e.g. wikitext-2-test.txt); not needed with `--kld`.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Maximum number of chunks to score (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Base log-probability file (llama-perplexity's `--kl-divergence-base` format): written
    /// by this run, or read with `--kld`.
    #[arg(long = "kld-base", value_name = "FILE")]
    pub kld_base: Option<PathBuf>,
    /// Score the model against `--kld-base FILE` (its tokens and context size are used).
    #[arg(long, requires = "kld_base")]
    pub kld: bool,
    /// Score the model against this reference model, evaluated in the same run.
    #[arg(long = "kld-ref", value_name = "MODEL", conflicts_with = "kld_base")]
    pub kld_ref: Option<PathBuf>,
    /// Print the final numbers as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Tokenized text, with the chunk count and BOS to use.
struct Text {
    tokens: Vec<u32>,
    n_chunks: usize,
    bos: Option<u32>,
}

fn tokenize(args: &PerplexityArgs, tok: &Tokenizer, n_ctx: usize) -> Result<Text> {
    let Some(file) = &args.file else {
        bail!("-f FILE is required (the text to score)");
    };
    let text = read_text(file)?;
    let t0 = Instant::now();
    let tokens = tok.encode(&text, true, false);
    let n = n_chunks(tokens.len(), n_ctx, args.chunks);
    if n == 0 {
        bail!(
            "{}: {} tokens is less than one chunk of {n_ctx} (use a smaller -c)",
            file.display(),
            tokens.len()
        );
    }
    eprintln!(
        "{}: {} tokens, {n} chunks of {n_ctx} (tokenized in {:.2} s)",
        file.display(),
        tokens.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(Text {
        tokens,
        n_chunks: n,
        bos: tok.add_bos().then(|| tok.bos()).flatten(),
    })
}

/// Per-chunk progress on stderr: one updating line on a terminal, a line per chunk otherwise.
struct Progress {
    tty: bool,
    n: usize,
    t0: Instant,
}

impl Progress {
    fn new(n: usize) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            n,
            t0: Instant::now(),
        }
    }

    fn chunk(&self, i: usize, what: &str) {
        let n = self.n;
        let eta = self.t0.elapsed().as_secs_f64() / (i + 1) as f64 * (n - i - 1) as f64;
        if self.tty {
            eprint!("\r[{}/{n}] {what}  (ETA {eta:.0} s)   ", i + 1);
        } else {
            eprintln!("[{}/{n}] {what}", i + 1);
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

pub fn run(mut args: PerplexityArgs) -> Result<()> {
    if args.kld {
        return run_kld_from_file(args);
    }
    let n_ctx = *args.model.ctx.get_or_insert(512);
    if n_ctx < 4 {
        bail!("-c {n_ctx}: the context must be at least 4 tokens (half of each chunk is scored)");
    }
    let (model, tok) = load(&args.model)?;
    if let Some(reference) = args.kld_ref.clone() {
        return run_kld_ref(&args, &model, reference, n_ctx);
    }
    let text = tokenize(&args, &tok, n_ctx)?;
    let n = text.n_chunks;
    eprintln!("{} threads", model.pool.n_threads());
    let progress = Progress::new(n);
    let on_chunk = |i, s: &PplStats| progress.chunk(i, &format!("running PPL {:.4}", s.ppl()));
    let stats = match &args.kld_base {
        Some(path) => {
            eprintln!("saving the log-probabilities to {}", path.display());
            write_base(&model, &text.tokens, n_ctx, n, text.bos, path, on_chunk)?
        }
        None => perplexity(&model, &text.tokens, n_ctx, Some(n), text.bos, on_chunk)?,
    };
    progress.done();
    if args.json {
        let j = serde_json::json!({
            "ppl": stats.ppl(), "ppl_err": stats.ppl_err(), "count": stats.count,
            "chunks": n, "n_ctx": n_ctx,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            stats.ppl(),
            stats.ppl_err()
        );
    }
    let secs = progress.t0.elapsed().as_secs_f64();
    eprintln!(
        "scored {} tokens in {secs:.1} s ({:.1} tokens/s evaluated)",
        stats.count,
        (n * n_ctx) as f64 / secs
    );
    Ok(())
}

/// `--kld-base FILE --kld`: tokens and context size from the file.
fn run_kld_from_file(mut args: PerplexityArgs) -> Result<()> {
    let path = args
        .kld_base
        .clone()
        .context("--kld needs --kld-base FILE")?;
    let reader = BaseReader::open(&path)?;
    let n_ctx = reader.n_ctx;
    if let Some(c) = args.model.ctx.filter(|&c| c != n_ctx) {
        bail!(
            "{}: the base was computed with -c {n_ctx}, not -c {c} (leave -c out)",
            path.display()
        );
    }
    args.model.ctx = Some(n_ctx);
    let (model, tok) = load(&args.model)?;
    reader.check_vocab(model.config.n_vocab)?;
    let n = args
        .chunks
        .map_or(reader.n_chunk, |c| c.min(reader.n_chunk));
    let tokens = reader.tokens.clone();
    eprintln!(
        "{}: {} chunks of {n_ctx} tokens, scoring {n}",
        path.display(),
        reader.n_chunk
    );
    let bos = tok.add_bos().then(|| tok.bos()).flatten();
    finish_kld(&args, &model, Base::File(reader), &tokens, n_ctx, n, bos)
}

/// `--kld-ref MODEL`: the reference's rows computed chunk by chunk in this run.
fn run_kld_ref(
    args: &PerplexityArgs,
    model: &Model,
    reference: PathBuf,
    n_ctx: usize,
) -> Result<()> {
    let ref_args = ModelArgs {
        model: reference.clone(),
        ..args.model.clone()
    };
    let (ref_model, ref_tok) = load(&ref_args)?;
    if ref_model.config.n_vocab != model.config.n_vocab {
        bail!(
            "{}: the reference has a vocabulary of {} tokens, {} has {}: they must share one",
            reference.display(),
            ref_model.config.n_vocab,
            args.model.model.display(),
            model.config.n_vocab
        );
    }
    // tokenized by the reference, as its base file would have been
    let text = tokenize(args, &ref_tok, n_ctx)?;
    let base = Base::Model(
        &ref_model,
        Box::new(ChunkEval::new(&ref_model, n_ctx, text.bos)),
    );
    finish_kld(
        args,
        model,
        base,
        &text.tokens,
        n_ctx,
        text.n_chunks,
        text.bos,
    )
}

fn finish_kld(
    args: &PerplexityArgs,
    model: &Model,
    mut base: Base,
    tokens: &[u32],
    n_ctx: usize,
    n: usize,
    bos: Option<u32>,
) -> Result<()> {
    eprintln!("{} threads", model.pool.n_threads());
    let progress = Progress::new(n);
    let tty = progress.tty;
    if !tty {
        eprintln!("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p");
    }
    let stats: KldStats = kl_divergence(model, &mut base, tokens, n_ctx, n, bos, |i, s| {
        let r = s.report();
        if tty {
            progress.chunk(i, &format!("PPL {:.4}  KLD {:.5}", r.ppl, r.kld));
        } else {
            eprintln!(
                "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
                i + 1,
                r.ppl,
                r.ppl_err,
                r.ln_ratio,
                r.ln_ratio_err,
                r.kld,
                r.kld_err,
                100.0 * r.rms_p_diff,
                100.0 * r.rms_p_diff_err,
                100.0 * r.same_top,
                100.0 * r.same_top_err
            );
        }
    })?;
    progress.done();
    let report = stats.report();
    if args.json {
        let mut j = report.to_json();
        j["chunks"] = n.into();
        j["n_ctx"] = n_ctx.into();
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        if report.count < 100 {
            eprintln!(
                "note: only {} tokens scored; llama-perplexity prints no statistics under 100",
                report.count
            );
        }
        print!("{}", report.to_text());
    }
    Ok(())
}
