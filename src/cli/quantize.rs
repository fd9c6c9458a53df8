//! `kiln quantize IN.gguf OUT.gguf TYPE [--imatrix FILE] [--tensor-type PATTERN=TYPE]… [--pure]
//! [--allow-requantize] [-t N] [--method rtn|imatrix|gptq|awq|awq+gptq -f CALIB.txt]`:
//! llama-quantize's recipe, byte for byte, optionally calibrated (`kiln::calib`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ggml_compat::gguf::GgufFile;
use ggml_compat::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};
use kiln::calib::run::{self, CalibOptions, Method};
use kiln::convert::imatrix::{self, Collector, Imatrix};
use kiln::convert::quantize::{plan_tensors, quantize_file, QuantizeParams, QuantizeSummary};
use kiln::convert::recipe::Ftype;
use kiln::eval::imatrix::{collect, CollectOptions};
use std::sync::{Arc, Mutex};

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
    #[command(flatten)]
    pub calib: CalibArgs,
}

/// How weights are fitted: the flags shared by `kiln quantize` and `kiln convert`.
#[derive(clap::Args, Debug, Clone)]
pub struct CalibArgs {
    /// rtn (ggml's plain quantization), imatrix (importance-weighted, collected from -f),
    /// gptq, awq, awq+gptq (calibrated layer by layer on -f).
    #[arg(long, default_value = "rtn")]
    pub method: String,
    /// Calibration text (e.g. wikitext-2-valid.txt; never the evaluation text).
    #[arg(short = 'f', long = "calib-file", value_name = "CALIB.txt")]
    pub calib_file: Option<PathBuf>,
    /// Calibration chunks of -c tokens.
    #[arg(long, default_value_t = 32)]
    pub chunks: usize,
    /// Tokens per calibration chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// GPTQ damping: this fraction of the Hessian's mean diagonal is added to it.
    #[arg(long, default_value_t = 0.01)]
    pub gptq_damp: f64,
    /// Print what calibration did per layer (AWQ α and losses, GPTQ damping).
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

impl CalibArgs {
    /// The method, checked against the other flags.
    pub fn method(&self) -> Result<Method> {
        let m = Method::from_name(&self.method).ok_or_else(|| {
            anyhow!(
                "unknown --method '{}'; one of: {}",
                self.method,
                Method::NAMES
            )
        })?;
        if m != Method::Rtn && self.calib_file.is_none() {
            bail!(
                "--method {} needs calibration text: -f CALIB.txt",
                self.method
            );
        }
        if self.ctx < 2 || self.chunks == 0 {
            bail!("calibration needs -c of at least 2 tokens and at least one chunk");
        }
        Ok(m)
    }
}

/// Quantizes `input` to `output` with `params`, calibrating first when `calib` asks for it.
pub fn quantize_calibrated(
    input: &Path,
    output: &Path,
    mut params: QuantizeParams,
    calib: &CalibArgs,
) -> Result<QuantizeSummary> {
    let method = calib.method()?;
    if method != Method::Rtn {
        if params.imatrix.is_some() {
            bail!(
                "--imatrix and --method {} exclude each other: calibration collects its own",
                calib.method
            );
        }
        let text_path = calib.calib_file.as_deref().expect("checked by method()");
        let text = std::fs::read_to_string(text_path)
            .with_context(|| format!("cannot read calibration text {}", text_path.display()))?;
        let name = text_path.display().to_string();
        // plan with an (empty) importance matrix: the recipe's choices depend on having one
        params.imatrix = Some((Imatrix::default(), name.clone()));
        let file = GgufFile::open(input)?;
        let (plans, _, _) = plan_tensors(&file, &params)?;
        drop(file);
        let opts = CalibOptions {
            method,
            n_ctx: calib.ctx,
            chunks: calib.chunks,
            threads: params.threads,
            awq_samples: 1024,
            gptq_damp: calib.gptq_damp,
        };
        let (mut model, chunks, bos) = run::load(input, &text, &name, &opts)?;
        eprintln!(
            "calibrating ({}) on {} chunks of {} tokens from {name}",
            calib.method,
            chunks.len(),
            calib.ctx
        );
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if method == Method::Imatrix {
            // exactly llama-imatrix, then llama-quantize --imatrix
            let t0 = std::time::Instant::now();
            let collector = Arc::new(Mutex::new(Collector::new(calib.ctx)));
            let tokens: Vec<u32> = chunks.concat();
            let copts = CollectOptions {
                n_ctx: calib.ctx,
                max_chunks: None,
                bos,
                process_output: false,
                compute_ppl: false,
            };
            bar.set_length(chunks.len() as u64);
            collect(&model, &tokens, &copts, &collector, |_, _| bar.inc(1))?;
            bar.finish_and_clear();
            let im = collector
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_imatrix(&name)?;
            eprintln!(
                "importance matrix collected in {:.1} s, peak memory {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                run::peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
            );
            params.imatrix = Some((im, name));
            return quantize_with_bar(input, output, &params);
        }
        let mut cal = run::calibrate(&mut model, &chunks, &plans, &opts, &bar)?;
        bar.finish_and_clear();
        if calib.verbose {
            cal.log.iter().for_each(|line| eprintln!("{line}"));
        }
        eprintln!(
            "calibrated in {:.1} s ({} tokens per pass), peak memory {:.0} MiB",
            cal.seconds,
            cal.tokens,
            run::peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
        );
        cal.imatrix.datasets = vec![name.clone()];
        params.replacements = std::mem::take(&mut cal.replacements);
        params.imatrix = Some((cal.imatrix, name));
    }
    quantize_with_bar(input, output, &params)
}

fn quantize_with_bar(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
) -> Result<QuantizeSummary> {
    let bar = super::convert::byte_bar();
    // Every error names the file it concerns (input, output or override), so no context here.
    let summary = quantize_file(input, output, params, &bar)?;
    bar.finish_and_clear();
    Ok(summary)
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
    let summary = quantize_calibrated(&args.input, &args.output, params, &args.calib)?;
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
