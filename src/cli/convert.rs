//! `kiln convert HF_DIR -o OUT.gguf [--outtype TYPE]`: a Hugging Face safetensors folder to
//! GGUF, as llama.cpp's `convert_hf_to_gguf.py` writes it.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::convert::hf_to_gguf::{convert_dir, ConvertParams};
use kiln::calib::run::Method;
use kiln::convert::quantize::QuantizeParams;
use kiln::convert::recipe::Ftype;

use super::quantize::{quantize_calibrated, CalibArgs};

/// Arguments of `kiln convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Hugging Face folder: config.json, model.safetensors (or shards + index), tokenizer.json.
    pub dir: PathBuf,
    /// Output GGUF file (written to OUT.tmp and renamed when complete).
    #[arg(short = 'o', long = "outfile")]
    pub output: PathBuf,
    /// f32, f16, bf16, q8_0, tq1_0, tq2_0 (as convert_hf_to_gguf.py), or any `kiln quantize`
    /// type (q4_k_m, q5_k_m, q4_0, iq4_nl, …: as converting to f16 then quantizing).
    #[arg(long, default_value = "f16")]
    pub outtype: String,
    /// Worker threads (default: available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub calib: CalibArgs,
}

/// A progress bar over bytes with the current tensor as message (hidden when stderr is not a
/// terminal).
pub fn byte_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {eta} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Run `kiln convert`.
pub fn run(args: ConvertArgs) -> Result<()> {
    let outtype = Ftype::from_name(&args.outtype).ok_or_else(|| {
        let names: Vec<&str> = Ftype::all().map(Ftype::name).collect();
        anyhow!(
            "unknown --outtype '{}'; one of: {}",
            args.outtype,
            names.join(", ")
        )
    })?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.calib.method()? != Method::Rtn {
        return convert_calibrated(&args, outtype, threads);
    }
    let bar = byte_bar();
    let summary = convert_dir(
        &args.dir,
        &args.output,
        &ConvertParams { outtype, threads },
        &bar,
    )
    .with_context(|| format!("converting {}", args.dir.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} tensors, {:.2} MiB ({})",
        args.output.display(),
        summary.n_tensors,
        summary.bytes_out as f64 / (1024.0 * 1024.0),
        outtype.name()
    );
    Ok(())
}

/// Calibrated conversion: the folder to a temporary F16 file beside the output, then
/// `kiln quantize --method …` of it; the temporary file is removed whatever happens.
fn convert_calibrated(args: &ConvertArgs, outtype: Ftype, threads: usize) -> Result<()> {
    let f16 = Ftype::from_name("f16").expect("f16 is a file type");
    let mut tmp = args.output.clone().into_os_string();
    tmp.push(".f16.tmp");
    let tmp = PathBuf::from(tmp);
    let bar = byte_bar();
    let result = convert_dir(
        &args.dir,
        &tmp,
        &ConvertParams {
            outtype: f16,
            threads,
        },
        &bar,
    )
    .with_context(|| format!("converting {}", args.dir.display()))
    .and_then(|_| {
        bar.finish_and_clear();
        let params = QuantizeParams {
            ftype: outtype,
            overrides: Vec::new(),
            pure: false,
            allow_requantize: false,
            imatrix: None,
            threads,
            replacements: Default::default(),
        };
        quantize_calibrated(&tmp, &args.output, params, &args.calib)
    });
    let _ = std::fs::remove_file(&tmp);
    let summary = result?;
    eprintln!(
        "{}: {} tensors, {:.2} MiB ({}, {})",
        args.output.display(),
        summary.tensors.len(),
        summary.bytes_out as f64 / (1024.0 * 1024.0),
        outtype.name(),
        args.calib.method
    );
    Ok(())
}
