//! The `kiln` command line: thin front ends over the library.

use anyhow::Result;
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
enum Command {}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
