//! `kiln quantize IN.gguf OUT.gguf TYPE [--imatrix FILE] [--tensor-type PATTERN=TYPE]… [--pure]
//! [--allow-requantize] [-t N]`: llama-quantize's recipe, byte for byte.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use ggml_compat::GgmlType;
use kiln::convert::imatrix;
use kiln::convert::quantize::{quantize_file, QuantizeParams};
use kiln::convert::recipe::Ftype;

/// Arguments of `kiln quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// Input GGUF file (F32/F16/BF16, or quantized with --allow-requantize).
    pub input: PathBuf,
    /// Output GGUF file (written to OUT.tmp and renamed when complete).
    pub output: PathBuf,
    /// File type: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S/M/L, Q4_K_S/M,
    /// Q5_K_S/M, Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, Q1_0, Q2_0, MXFP4_MOE.
    pub ftype: String,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Give tensors whose name matches the regex PATTERN the ggml type TYPE (repeatable;
    /// first match wins), e.g. `--tensor-type ffn_down=q8_0`.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,
    /// Every quantizable tensor gets TYPE's default type (no mix).
    #[arg(long)]
    pub pure: bool,
    /// Allow quantizing tensors that are already quantized.
    #[arg(long = "allow-requantize")]
    pub allow_requantize: bool,
    /// Worker threads (default: available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

/// Parse `PATTERN=TYPE` like llama-quantize's `parse_tensor_type`.
fn parse_override(s: &str) -> Result<(String, GgmlType)> {
    let (pat, ty) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--tensor-type '{s}': expected PATTERN=TYPE"))?;
    if pat.is_empty() || ty.is_empty() {
        bail!("--tensor-type '{s}': missing tensor name or type");
    }
    let t = GgmlType::ALL
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(ty))
        .ok_or_else(|| anyhow!("--tensor-type '{s}': unknown ggml type '{ty}'"))?;
    Ok((pat.to_string(), *t))
}

/// Run `kiln quantize`.
pub fn run(args: QuantizeArgs) -> Result<()> {
    let ftype = Ftype::from_name(&args.ftype).ok_or_else(|| {
        let names: Vec<&str> = Ftype::all().map(Ftype::name).collect();
        anyhow!(
            "unknown type '{}'; one of: {}",
            args.ftype,
            names.join(", ")
        )
    })?;
    let overrides = args
        .tensor_type
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<Vec<_>>>()?;
    let imatrix = match &args.imatrix {
        Some(p) => Some((imatrix::load(p)?, p.display().to_string())),
        None => None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let params = QuantizeParams {
        ftype,
        overrides,
        pure: args.pure,
        allow_requantize: args.allow_requantize,
        imatrix,
        threads,
        replacements: Default::default(),
    };
    let bar = super::convert::byte_bar();
    let summary = quantize_file(&args.input, &args.output, &params, &bar)
        .with_context(|| format!("quantizing {}", args.input.display()))?;
    bar.finish_and_clear();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{}: {} tensors, {:.2} MiB -> {:.2} MiB ({}){}",
        args.output.display(),
        summary.tensors.len(),
        mib(summary.bytes_in),
        mib(summary.bytes_out),
        ftype.name(),
        if summary.n_fallback > 0 {
            format!(
                ", {} tensor(s) fell back to another type",
                summary.n_fallback
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
