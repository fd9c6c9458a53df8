//! The `kiln` command line: thin front ends over the library.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "GGUF-compatible LLM inference for laptop CPUs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a GGUF file: header, metadata, tensors, totals (like gguf-dump).
    Inspect(cli::inspect::Args),
    /// Complete a prompt, streaming the continuation (timings on stderr).
    Run(cli::run::RunArgs),
    /// Chat with a model in the terminal (default model: SmolLM2-135M-Instruct, fetched on first use).
    Chat(cli::chat::ChatArgs),
    /// Perplexity of a model on a text file (llama-perplexity's protocol).
    Perplexity(cli::perplexity::PerplexityArgs),
    /// Tokens per second, llama-bench's tests and output (pp512, tg128).
    Bench(cli::bench::BenchArgs),
    /// Quantize a GGUF file with llama-quantize's recipe.
    Quantize(cli::quantize::QuantizeArgs),
    /// Importance matrix of a model over a calibration text (llama-imatrix's statistics and files).
    Imatrix(cli::imatrix::ImatrixArgs),
    /// Convert a Hugging Face safetensors folder to GGUF (as convert_hf_to_gguf.py).
    Convert(cli::convert::ConvertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pick the kernels once, up front: a bad KILN_KERNELS is an error, not a silent fallback.
    if let Err(e) = kiln::kernels::init() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(&args),
        Command::Run(args) => cli::run::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::Perplexity(args) => cli::perplexity::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Convert(args) => cli::convert::run(args),
        Command::Imatrix(args) => cli::imatrix::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
