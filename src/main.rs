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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Inspect(args) => cli::inspect::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
