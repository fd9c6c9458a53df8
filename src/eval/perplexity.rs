//! Perplexity with llama-perplexity's protocol (`tools/perplexity/perplexity.cpp`): the text is
//! tokenized once (BOS first where the model adds one), cut into chunks of `n_ctx` tokens, each
//! chunk evaluated from an empty cache with its first token replaced by BOS (where the model adds
//! one), and only the second half of each chunk scored.

use crate::model::{Model, ModelError, State};

/// Running totals over the scored tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct PplStats {
    /// Sum of negative log-likelihoods.
    pub nll: f64,
    /// Sum of squared log-likelihoods (for the error estimate).
    pub nll2: f64,
    pub count: usize,
}

impl PplStats {
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// Standard error of the perplexity, as llama-perplexity's "Final estimate: PPL = x +/- e".
    pub fn ppl_err(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }

    /// Add one token's log-probability.
    pub fn add(&mut self, logprob: f64) {
        self.nll -= logprob;
        self.nll2 += logprob * logprob;
        self.count += 1;
    }
}

/// `log softmax(logits)[target]`, with the sum of exponentials in f64 as llama.cpp does.
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max).exp()) as f64).sum();
    (logits[target] - max) as f64 - sum.ln()
}

/// Number of whole chunks of `n_ctx` tokens in `n_tokens`, capped at `max_chunks`.
pub fn n_chunks(n_tokens: usize, n_ctx: usize, max_chunks: Option<usize>) -> usize {
    let all = n_tokens / n_ctx;
    max_chunks.map_or(all, |m| m.min(all))
}

/// One chunk of llama-perplexity's loop: evaluated from an empty cache, its first token
/// replaced by BOS (where the model adds one), the second half scored.
pub struct ChunkEval {
    state: State,
    n_ctx: usize,
    bos: Option<u32>,
}

impl ChunkEval {
    /// Buffers for chunks of `n_ctx` tokens of `model`.
    pub fn new(model: &Model, n_ctx: usize, bos: Option<u32>) -> ChunkEval {
        ChunkEval {
            state: model.new_state(n_ctx),
            n_ctx,
            bos,
        }
    }

    /// Evaluate `chunk` (`n_ctx` tokens) and call `on_row(i, logits)` for each scored position
    /// `i` in `n_ctx/2 .. n_ctx-1`; its logits predict `chunk[i + 1]`.
    pub fn run(
        &mut self,
        model: &Model,
        chunk: &[u32],
        on_row: impl FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        let mut input = chunk[..self.n_ctx].to_vec();
        if let Some(bos) = self.bos {
            input[0] = bos;
        }
        self.state.cache.truncate(0);
        model.forward(
            &mut self.state,
            &input,
            self.n_ctx / 2..self.n_ctx - 1,
            on_row,
        )
    }
}

/// Scores `tokens` chunk by chunk (llama-perplexity's `perplexity`); `on_chunk(i, running_stats)`
/// after each chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, &PplStats),
) -> Result<PplStats, ModelError> {
    let mut stats = PplStats::default();
    let mut eval = ChunkEval::new(model, n_ctx, bos);
    for chunk in 0..n_chunks(tokens.len(), n_ctx, max_chunks) {
        let toks = &tokens[chunk * n_ctx..(chunk + 1) * n_ctx];
        eval.run(model, toks, |i, logits| {
            stats.add(log_softmax_at(logits, toks[i + 1] as usize));
        })?;
        on_chunk(chunk, &stats);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_is_log_n() {
        let l = [3.0f32; 8];
        assert!((log_softmax_at(&l, 5) + (8f64).ln()).abs() < 1e-9);
    }

    #[test]
    fn error_estimate_is_zero_for_constant_losses_and_positive_otherwise() {
        let mut s = PplStats::default();
        for _ in 0..10 {
            s.add(-2.0);
        }
        assert!((s.ppl() - 2f64.exp()).abs() < 1e-9);
        assert_eq!(s.ppl_err(), 0.0);
        s.add(-4.0);
        assert!(s.ppl_err() > 0.0);
    }

    #[test]
    fn chunks_are_whole_and_capped() {
        assert_eq!(n_chunks(1000, 512, None), 1);
        assert_eq!(n_chunks(5000, 512, Some(3)), 3);
        assert_eq!(n_chunks(100, 512, Some(3)), 0);
    }
}
