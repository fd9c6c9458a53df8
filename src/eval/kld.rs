//! KL divergence of a model to a base model, as llama-perplexity's `--kl-divergence-base FILE`
//! (save the base model's log-probabilities) and `--kl-divergence` (score another model against
//! them), `tools/perplexity/perplexity.cpp`.
//!
//! The base file: `"_logits_"`, `u32 n_ctx`, `i32 n_vocab`, `i32 n_chunk`, the
//! `n_chunk × n_ctx` evaluated tokens (i32, as tokenized, before any BOS replacement), then per
//! chunk `n_ctx - 1 - n_ctx/2` rows (the scored second half) of `nv = 2·⌈n_vocab/2⌉ + 4` u16:
//! the f32 `scale` and `min_log_prob`, then each token's log-probability as
//! `min_log_prob + scale · u16` (log-probabilities more than 16 below the top one clamp to 0).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::perplexity::{ChunkEval, PplStats};
use crate::model::{Model, ModelError};

/// The base file's magic.
pub const MAGIC: &[u8; 8] = b"_logits_";

/// Why a base file could not be written, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KldError {
    #[error("{file}: {error}")]
    Io {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{file}: not a log-probability file from `--kld-base` / llama-perplexity `--kl-divergence-base` ({msg})")]
    NotBase { file: PathBuf, msg: String },
    #[error("{file}: truncated: its header promises {expected} bytes ({n_chunk} chunks of {n_ctx} tokens, {n_vocab} vocabulary), but it has {got}")]
    Truncated {
        file: PathBuf,
        expected: u64,
        got: u64,
        n_chunk: usize,
        n_ctx: usize,
        n_vocab: usize,
    },
    #[error("{file}: the base model had a vocabulary of {base} tokens, the model tested has {model}: the two must share a vocabulary")]
    Vocab {
        file: PathBuf,
        base: usize,
        model: usize,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// u16 per row of a base file: `2·⌈n_vocab/2⌉ + 4`.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Rows scored per chunk: `n_ctx - 1 - n_ctx/2`.
pub fn rows_per_chunk(n_ctx: usize) -> usize {
    n_ctx.saturating_sub(1 + n_ctx / 2)
}

/// ggml's `nearest_int` (ties to even through the 1.5·2²³ trick).
fn nearest_int(f: f32) -> i32 {
    let v = f + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Max of `logits` and the index of its first occurrence.
fn arg_max(logits: &[f32]) -> (f32, usize) {
    let mut best = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > best.0 {
            best = (l, i);
        }
    }
    best
}

/// `log Σ exp(l - max)` with the sum in f64, rounded to f32 as llama-perplexity does.
fn log_sum_exp(logits: &[f32], max: f32) -> f32 {
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    sum.ln() as f32
}

/// Compress one row of logits into `out` (`row_len(n_vocab)` u16) and return the negative
/// log-likelihood of `tok` — llama-perplexity's `log_softmax(n_vocab, logits, uint16_t*, tok)`.
pub fn compress_row(logits: &[f32], tok: usize, out: &mut [u16]) -> f64 {
    let (max, _) = arg_max(logits);
    let min = logits
        .iter()
        .copied()
        .fold(logits[0], f32::min)
        .max(max - 16.0);
    let lse = log_sum_exp(logits, max);
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    let (s, m) = (scale.to_bits(), min_log_prob.to_bits());
    out[..4].copy_from_slice(&[s as u16, (s >> 16) as u16, m as u16, (m >> 16) as u16]);
    let q = &mut out[4..];
    q.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in q.iter_mut().zip(logits) {
            if l > min {
                *o = nearest_int(inv * (l - min)) as u16;
            }
        }
    }
    (max + lse - logits[tok]) as f64
}

/// Running sums of llama-perplexity's `kl_divergence_result`, plus every token's KLD and Δp
/// for the percentiles.
#[derive(Clone, Debug, Default)]
pub struct KldStats {
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_nll_nll_base: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub sum_p_diff: f64,
    pub sum_p_diff2: f64,
    pub sum_p_diff4: f64,
    pub max_p_diff: f32,
    pub n_same_top: usize,
    pub count: usize,
    pub kld_values: Vec<f32>,
    pub p_diff_values: Vec<f32>,
}

impl KldStats {
    /// Score one row of the tested model's `logits` against the base row `base`
    /// (`row_len(n_vocab)` u16) for target `tok` — llama-perplexity's
    /// `log_softmax(n_vocab, logits, const uint16_t*, tok, kld)`, f32/f64 as there.
    pub fn add_row(&mut self, logits: &[f32], base: &[u16], tok: usize) {
        let (max, imax) = arg_max(logits);
        let lse = log_sum_exp(logits, max);
        let f = |lo: u16, hi: u16| f32::from_bits(lo as u32 | (hi as u32) << 16);
        let (scale, min_log_prob) = (f(base[0], base[1]), f(base[2], base[3]));
        let q = &base[4..4 + logits.len()];

        let nll = max + lse - logits[tok];
        self.sum_nll += nll as f64;
        self.sum_nll2 += (nll * nll) as f64;
        let nll_base = -(scale * q[tok] as f32 + min_log_prob);
        self.sum_nll_base += nll_base as f64;
        self.sum_nll_base2 += (nll_base * nll_base) as f64;
        self.sum_nll_nll_base += (nll * nll_base) as f64;

        let log_norm = max + lse;
        let mut kld = 0f64;
        let (mut imax_base, mut p_log_base_max) = (0usize, 0f32);
        for (i, (&b, &l)) in q.iter().zip(logits).enumerate() {
            let p_log_base = scale * b as f32 + min_log_prob;
            if i == 0 || p_log_base > p_log_base_max {
                p_log_base_max = p_log_base;
                imax_base = i;
            }
            if p_log_base > -16.0 {
                let p_base = p_log_base.exp();
                kld += (p_base * (p_log_base - l + log_norm)) as f64;
            }
        }
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        self.count += 1;
        if imax == imax_base {
            self.n_same_top += 1;
        }
        let p_diff = (-nll).exp() - (-nll_base).exp();
        self.sum_p_diff += p_diff as f64;
        let p_diff2 = (p_diff * p_diff) as f64;
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.max_p_diff = self.max_p_diff.max(p_diff.abs());
        self.kld_values.push(kld as f32);
        self.p_diff_values.push(p_diff);
    }

    /// The summary llama-perplexity prints (per chunk: PPL, ln ratio, KLD, RMS Δp, same top;
    /// at the end: all of [`KldReport`]).
    pub fn report(&self) -> KldReport {
        let n = self.count;
        let (lp, lp_e) = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let (lb, lb_e) = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let (ppl, ppl_base) = (lp.exp(), lb.exp());
        let (ppl_err, ppl_base_err) = (ppl * lp_e, ppl_base * lb_e);
        let ln_ratio = lp - lb;
        let ln_ratio_err = (lp_e * lp_e + lb_e * lb_e - 2.0 * cov).sqrt();
        let ppl_cov = ppl * ppl_base * cov;
        let (kld, kld_err) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let (p_diff, p_diff_err) = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n);
        let (mse, mse_err) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.sqrt();
        let same_top = self.n_same_top as f64 / n as f64;
        let mut kv = self.kld_values.clone();
        let mut pv = self.p_diff_values.clone();
        kv.sort_by(f32::total_cmp);
        pv.sort_by(f32::total_cmp);
        let kld_fracs = [0.999, 0.99, 0.95, 0.90, 0.10, 0.05, 0.01, 0.001];
        let p_fracs = [0.999, 0.99, 0.95, 0.90, 0.75, 0.25, 0.10, 0.05, 0.01, 0.001];
        KldReport {
            count: n,
            ppl,
            ppl_err,
            ppl_base,
            ppl_base_err,
            cor: cov / (lp_e * lb_e),
            ln_ratio,
            ln_ratio_err,
            ratio: ln_ratio.exp(),
            ratio_err: ln_ratio.exp() * ln_ratio_err,
            diff: ppl - ppl_base,
            diff_err: (ppl_err * ppl_err + ppl_base_err * ppl_base_err - 2.0 * ppl_cov).sqrt(),
            kld,
            kld_err,
            kld_max: kv.last().copied().unwrap_or(0.0),
            kld_median: median(&kv),
            kld_min: kv.first().copied().unwrap_or(0.0),
            kld_percentiles: kld_fracs.map(|f| (f, percentile(&kv, f))).to_vec(),
            p_diff,
            p_diff_err,
            p_diff_max: pv.last().copied().unwrap_or(0.0),
            p_diff_median: median(&pv),
            p_diff_min: pv.first().copied().unwrap_or(0.0),
            p_diff_percentiles: p_fracs.map(|f| (f, percentile(&pv, f))).to_vec(),
            rms_p_diff: rms,
            rms_p_diff_err: 0.5 / rms * mse_err,
            same_top,
            same_top_err: (same_top * (1.0 - same_top) / (n as f64 - 1.0)).sqrt(),
        }
    }
}

/// llama-perplexity's `mean_and_uncertainty`: mean, and its standard error when more than 10
/// values (else 0).
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (count as f64 - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// llama-perplexity's `covariance` (0 under 10 values).
fn covariance(a: f64, b: f64, ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (ab / n - (a / n) * (b / n)) / (n - 1.0)
}

/// llama-perplexity's `percentile` over sorted values, interpolated in f32.
fn percentile(v: &[f32], fraction: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    if fraction <= 0.0 {
        return v[0];
    }
    if fraction >= 1.0 {
        return v[v.len() - 1];
    }
    let p = fraction * (v.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
}

fn median(v: &[f32]) -> f32 {
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => 0.5 * (v[n / 2] + v[n / 2 - 1]),
        n => v[n / 2],
    }
}

/// What llama-perplexity `--kl-divergence` prints at the end (percentiles as
/// `(fraction, value)`; Δp values are probabilities, not percent).
#[derive(Clone, Debug, PartialEq)]
pub struct KldReport {
    pub count: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    pub ppl_base: f64,
    pub ppl_base_err: f64,
    /// Correlation of ln PPL(Q) and ln PPL(base).
    pub cor: f64,
    pub ln_ratio: f64,
    pub ln_ratio_err: f64,
    pub ratio: f64,
    pub ratio_err: f64,
    pub diff: f64,
    pub diff_err: f64,
    pub kld: f64,
    pub kld_err: f64,
    pub kld_max: f32,
    pub kld_median: f32,
    pub kld_min: f32,
    pub kld_percentiles: Vec<(f32, f32)>,
    pub p_diff: f64,
    pub p_diff_err: f64,
    pub p_diff_max: f32,
    pub p_diff_median: f32,
    pub p_diff_min: f32,
    pub p_diff_percentiles: Vec<(f32, f32)>,
    pub rms_p_diff: f64,
    pub rms_p_diff_err: f64,
    pub same_top: f64,
    pub same_top_err: f64,
}

impl KldReport {
    /// The report as JSON (fields named as above; percentiles keyed like `"99.9"`).
    pub fn to_json(&self) -> serde_json::Value {
        let pct = |v: &[(f32, f32)]| {
            let m: serde_json::Map<String, serde_json::Value> = v
                .iter()
                .map(|(f, x)| (format!("{}", f * 100.0), serde_json::json!(x)))
                .collect();
            serde_json::Value::Object(m)
        };
        serde_json::json!({
            "count": self.count,
            "ppl": self.ppl, "ppl_err": self.ppl_err,
            "ppl_base": self.ppl_base, "ppl_base_err": self.ppl_base_err,
            "cor": self.cor,
            "ln_ratio": self.ln_ratio, "ln_ratio_err": self.ln_ratio_err,
            "ratio": self.ratio, "ratio_err": self.ratio_err,
            "diff": self.diff, "diff_err": self.diff_err,
            "kld": self.kld, "kld_err": self.kld_err,
            "kld_max": self.kld_max, "kld_median": self.kld_median, "kld_min": self.kld_min,
            "kld_percentiles": pct(&self.kld_percentiles),
            "p_diff": self.p_diff, "p_diff_err": self.p_diff_err,
            "p_diff_max": self.p_diff_max, "p_diff_median": self.p_diff_median,
            "p_diff_min": self.p_diff_min,
            "p_diff_percentiles": pct(&self.p_diff_percentiles),
            "rms_p_diff": self.rms_p_diff, "rms_p_diff_err": self.rms_p_diff_err,
            "same_top": self.same_top, "same_top_err": self.same_top_err,
        })
    }

    /// The final statistics in llama-perplexity's layout.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line("====== Perplexity statistics ======".into());
        line(format!(
            "Mean PPL(Q)                   : {:10.6} ± {:10.6}",
            self.ppl, self.ppl_err
        ));
        line(format!(
            "Mean PPL(base)                : {:10.6} ± {:10.6}",
            self.ppl_base, self.ppl_base_err
        ));
        line(format!(
            "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
            100.0 * self.cor
        ));
        line(format!(
            "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
            self.ln_ratio, self.ln_ratio_err
        ));
        line(format!(
            "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
            self.ratio, self.ratio_err
        ));
        line(format!(
            "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
            self.diff, self.diff_err
        ));
        line(String::new());
        line("====== KL divergence statistics ======".into());
        line(format!(
            "Mean    KLD: {:10.6} ± {:10.6}",
            self.kld, self.kld_err
        ));
        line(format!("Maximum KLD: {:10.6}", self.kld_max));
        for (i, (f, v)) in self.kld_percentiles.iter().enumerate() {
            if i == 4 {
                line(format!("Median  KLD: {:10.6}", self.kld_median));
            }
            line(format!("{:>4.1}%   KLD: {v:10.6}", f * 100.0));
        }
        line(format!("Minimum KLD: {:10.6}", self.kld_min));
        line(String::new());
        line("====== Token probability statistics ======".into());
        line(format!(
            "Mean    Δp: {:6.3} ± {:5.3} %",
            100.0 * self.p_diff,
            100.0 * self.p_diff_err
        ));
        line(format!("Maximum Δp: {:6.3}%", 100.0 * self.p_diff_max));
        for (i, (f, v)) in self.p_diff_percentiles.iter().enumerate() {
            if i == 5 {
                line(format!("Median  Δp: {:6.3}%", 100.0 * self.p_diff_median));
            }
            line(format!("{:>4.1}%   Δp: {:6.3}%", f * 100.0, 100.0 * v));
        }
        line(format!("Minimum Δp: {:6.3}%", 100.0 * self.p_diff_min));
        line(format!(
            "RMS Δp    : {:6.3} ± {:5.3} %",
            100.0 * self.rms_p_diff,
            100.0 * self.rms_p_diff_err
        ));
        line(format!(
            "Same top p: {:6.3} ± {:5.3} %",
            100.0 * self.same_top,
            100.0 * self.same_top_err
        ));
        s
    }
}

/// Writes a base file chunk by chunk (`perplexity` with `--kl-divergence-base`).
pub struct BaseWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl BaseWriter {
    /// Create `path` and write the header and the `n_chunk × n_ctx` evaluated tokens.
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        tokens: &[u32],
    ) -> Result<BaseWriter, KldError> {
        let file = File::create(path).map_err(|error| KldError::Io {
            file: path.to_path_buf(),
            error,
        })?;
        let mut w = BaseWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
        };
        let n_chunk = tokens.len() / n_ctx;
        let mut head = MAGIC.to_vec();
        head.extend((n_ctx as u32).to_le_bytes());
        head.extend((n_vocab as i32).to_le_bytes());
        head.extend((n_chunk as i32).to_le_bytes());
        head.extend(
            tokens[..n_chunk * n_ctx]
                .iter()
                .flat_map(|&t| t.to_le_bytes()),
        );
        w.write(&head)?;
        Ok(w)
    }

    /// Append rows (`row_len(n_vocab)` u16 each).
    pub fn write_rows(&mut self, rows: &[u16]) -> Result<(), KldError> {
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(&bytes)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), KldError> {
        self.out.write_all(b).map_err(|error| KldError::Io {
            file: self.path.clone(),
            error,
        })
    }

    /// Flush to disk.
    pub fn finish(mut self) -> Result<(), KldError> {
        let path = self.path.clone();
        let io = |error| KldError::Io { file: path, error };
        self.out.flush().map_err(io)
    }
}

/// Reads a base file chunk by chunk, after checking its header against its size.
pub struct BaseReader {
    pub path: PathBuf,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    /// The `n_chunk × n_ctx` tokens the base model evaluated.
    pub tokens: Vec<u32>,
    input: BufReader<File>,
}

impl BaseReader {
    /// Open `path` and read its header and tokens (llama-perplexity's `kl_divergence` start),
    /// checking the file holds every chunk its header promises.
    pub fn open(path: &Path) -> Result<BaseReader, KldError> {
        let io = |error| KldError::Io {
            file: path.to_path_buf(),
            error,
        };
        let not = |msg: &str| KldError::NotBase {
            file: path.to_path_buf(),
            msg: msg.to_string(),
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut head = [0u8; 20];
        if size < 20 {
            return Err(not("shorter than its 20-byte header"));
        }
        input.read_exact(&mut head).map_err(io)?;
        if &head[..8] != MAGIC {
            return Err(not("it does not start with \"_logits_\""));
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (n_ctx, n_vocab, n_chunk) = (word(8), word(12) as i32, word(16) as i32);
        if n_ctx < 2 || n_vocab < 1 || n_chunk < 1 {
            return Err(not(&format!(
                "bad header: n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}"
            )));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let expected = (|| {
            let toks = (n_chunk as u64).checked_mul(n_ctx as u64)?.checked_mul(4)?;
            let rows = (n_chunk as u64).checked_mul(rows_per_chunk(n_ctx) as u64)?;
            let data = rows.checked_mul(row_len(n_vocab) as u64)?.checked_mul(2)?;
            20u64.checked_add(toks)?.checked_add(data)
        })()
        .ok_or_else(|| not("header sizes overflow"))?;
        if size != expected {
            return Err(KldError::Truncated {
                file: path.to_path_buf(),
                expected,
                got: size,
                n_chunk,
                n_ctx,
                n_vocab,
            });
        }
        let mut raw = vec![0u8; n_chunk * n_ctx * 4];
        input.read_exact(&mut raw).map_err(io)?;
        let tokens = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(BaseReader {
            path: path.to_path_buf(),
            n_ctx,
            n_vocab,
            n_chunk,
            tokens,
            input,
        })
    }

    /// Check the base model's vocabulary size against the tested model's.
    pub fn check_vocab(&self, n_vocab: usize) -> Result<(), KldError> {
        if n_vocab != self.n_vocab {
            return Err(KldError::Vocab {
                file: self.path.clone(),
                base: self.n_vocab,
                model: n_vocab,
            });
        }
        Ok(())
    }

    /// Read the next chunk's rows into `rows` (`rows_per_chunk(n_ctx) × row_len(n_vocab)`).
    pub fn read_chunk(&mut self, rows: &mut Vec<u16>) -> Result<(), KldError> {
        let n = rows_per_chunk(self.n_ctx) * row_len(self.n_vocab);
        let mut raw = vec![0u8; n * 2];
        self.input
            .read_exact(&mut raw)
            .map_err(|error| KldError::Io {
                file: self.path.clone(),
                error,
            })?;
        rows.clear();
        rows.extend(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        );
        Ok(())
    }
}

/// Evaluate `model` on the first `n_chunks` chunks of `tokens` as llama-perplexity with
/// `--kl-divergence-base` does: PPL as usual, and every scored row's log-probabilities written
/// to `path`. `on_chunk(i, running_stats)` after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn write_base(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    n_chunks: usize,
    bos: Option<u32>,
    path: &Path,
    mut on_chunk: impl FnMut(usize, &PplStats),
) -> Result<PplStats, KldError> {
    let n_vocab = model.config.n_vocab;
    let nv = row_len(n_vocab);
    let mut w = BaseWriter::create(path, n_ctx, n_vocab, &tokens[..n_chunks * n_ctx])?;
    let mut eval = ChunkEval::new(model, n_ctx, bos);
    let mut stats = PplStats::default();
    let first = n_ctx / 2;
    let mut rows = vec![0u16; rows_per_chunk(n_ctx) * nv];
    for chunk in 0..n_chunks {
        let toks = &tokens[chunk * n_ctx..(chunk + 1) * n_ctx];
        eval.run(model, toks, |i, logits| {
            let row = &mut rows[(i - first) * nv..(i - first + 1) * nv];
            stats.add(-compress_row(logits, toks[i + 1] as usize, row));
        })?;
        w.write_rows(&rows)?;
        on_chunk(chunk, &stats);
    }
    w.finish()?;
    Ok(stats)
}

/// Where the base model's rows come from: a file written earlier, or the reference model
/// evaluated in the same run.
pub enum Base<'a> {
    File(BaseReader),
    Model(&'a Model, Box<ChunkEval>),
}

impl Base<'_> {
    /// The rows of chunk `chunk` (`toks`, its `n_ctx` tokens) into `rows`.
    fn chunk_rows(
        &mut self,
        toks: &[u32],
        n_ctx: usize,
        rows: &mut Vec<u16>,
    ) -> Result<(), KldError> {
        match self {
            Base::File(r) => r.read_chunk(rows),
            Base::Model(model, eval) => {
                let nv = row_len(model.config.n_vocab);
                rows.resize(rows_per_chunk(n_ctx) * nv, 0);
                let first = n_ctx / 2;
                eval.run(model, toks, |i, logits| {
                    let row = &mut rows[(i - first) * nv..(i - first + 1) * nv];
                    compress_row(logits, toks[i + 1] as usize, row);
                })?;
                Ok(())
            }
        }
    }
}

/// Score `model` against `base` on the first `n_chunks` chunks of `tokens` (llama-perplexity's
/// `kl_divergence`). `on_chunk(i, running_stats)` after each chunk.
pub fn kl_divergence(
    model: &Model,
    base: &mut Base,
    tokens: &[u32],
    n_ctx: usize,
    n_chunks: usize,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, &KldStats),
) -> Result<KldStats, KldError> {
    let mut eval = ChunkEval::new(model, n_ctx, bos);
    let mut stats = KldStats::default();
    let first = n_ctx / 2;
    let nv = row_len(model.config.n_vocab);
    let mut rows = Vec::new();
    for chunk in 0..n_chunks {
        let toks = &tokens[chunk * n_ctx..(chunk + 1) * n_ctx];
        base.chunk_rows(toks, n_ctx, &mut rows)?;
        eval.run(model, toks, |i, logits| {
            let row = &rows[(i - first) * nv..(i - first + 1) * nv];
            stats.add_row(logits, row, toks[i + 1] as usize);
        })?;
        on_chunk(chunk, &stats);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 100.0 - 5.0)
            .collect()
    }

    #[test]
    fn compressed_row_decodes_to_log_probs_within_its_step() {
        let l = logits(101, 7);
        let mut row = vec![0u16; row_len(101)];
        let nll = compress_row(&l, 3, &mut row);
        let max = l.iter().copied().fold(f32::MIN, f32::max);
        let lse = l
            .iter()
            .map(|&x| ((x - max) as f64).exp())
            .sum::<f64>()
            .ln();
        assert!((nll - ((max - l[3]) as f64 + lse)).abs() < 1e-5);
        let f = |lo: u16, hi: u16| f32::from_bits(lo as u32 | (hi as u32) << 16);
        let (scale, min) = (f(row[0], row[1]), f(row[2], row[3]));
        for (i, &x) in l.iter().enumerate() {
            let lp = (x - max) as f64 - lse;
            if lp > -16.0 {
                let got = (scale * row[4 + i] as f32 + min) as f64;
                assert!((got - lp).abs() <= scale as f64, "{i}: {got} vs {lp}");
            }
        }
        assert_eq!(row[4 + 101], 0, "padding");
    }

    #[test]
    fn a_model_against_its_own_base_has_zero_kld_and_full_agreement() {
        let mut s = KldStats::default();
        for r in 0..120 {
            let l = logits(64, r);
            let mut row = vec![0u16; row_len(64)];
            compress_row(&l, (r % 64) as usize, &mut row);
            s.add_row(&l, &row, (r % 64) as usize);
        }
        let rep = s.report();
        assert!(rep.kld.abs() < 1e-4, "{}", rep.kld);
        assert_eq!(rep.same_top, 1.0);
        assert!((rep.ratio - 1.0).abs() < 1e-3);
    }

    #[test]
    fn different_logits_give_positive_kld_and_less_agreement() {
        let mut s = KldStats::default();
        for r in 0..120 {
            let mut row = vec![0u16; row_len(64)];
            compress_row(&logits(64, r), 1, &mut row);
            s.add_row(&logits(64, r + 1000), &row, 1);
        }
        let rep = s.report();
        assert!(rep.kld > 0.1 && rep.same_top < 0.5, "{rep:?}");
        assert!(rep.kld_min <= rep.kld_median && rep.kld_median <= rep.kld_max);
    }

    #[test]
    fn percentiles_interpolate_as_llama_perplexity() {
        let v = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert!((percentile(&v, 0.9) - 3.6).abs() < 1e-6);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
    }
}
