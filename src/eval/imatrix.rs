//! llama-imatrix's `compute_imatrix`: run the model over calibration text chunk by chunk,
//! feeding every matmul input it collects to a [`Collector`], with the running perplexity.

use std::sync::{Arc, Mutex};

use super::perplexity::{log_softmax_at, PplStats};
use crate::convert::imatrix::{Collector, ImatrixError};
use crate::model::{Model, ModelError};

/// Why a collection run failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Imatrix(#[from] ImatrixError),
    #[error("you need at least {need} tokens for a context of {n_ctx} tokens; the text tokenizes to only {have}")]
    TooShort {
        need: usize,
        n_ctx: usize,
        have: usize,
    },
}

/// Options of a collection run (llama-imatrix's flags).
#[derive(Clone, Copy, Debug)]
pub struct CollectOptions {
    pub n_ctx: usize,
    /// `--chunks`: at most this many chunks.
    pub max_chunks: Option<usize>,
    /// BOS put in place of each chunk's first token (where the model adds one).
    pub bos: Option<u32>,
    /// `--process-output`: also collect `output.weight` (all logits are then computed).
    pub process_output: bool,
    /// Compute the perplexity of the second half of each chunk (`--no-ppl` turns it off).
    pub compute_ppl: bool,
}

/// Evaluate `tokens` chunk by chunk (BOS first, empty cache each chunk, as `compute_imatrix`)
/// with `collector` observing the model's matmuls; `on_chunk(i, running_ppl)` after each chunk.
/// Needs at least two chunks of tokens, as llama-imatrix.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    opts: &CollectOptions,
    collector: &Arc<Mutex<Collector>>,
    mut on_chunk: impl FnMut(usize, &PplStats),
) -> Result<PplStats, CollectError> {
    let n_ctx = opts.n_ctx;
    if tokens.len() < 2 * n_ctx {
        return Err(CollectError::TooShort {
            need: 2 * n_ctx,
            n_ctx,
            have: tokens.len(),
        });
    }
    let all = tokens.len() / n_ctx;
    let n_chunks = opts.max_chunks.map_or(all, |m| m.min(all));
    let sink = Arc::clone(collector);
    let process_output = opts.process_output;
    model.set_observer(Some(Box::new(move |name: &str, x: &[f32], n: usize| {
        if Collector::wants(name, n, process_output) {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(name, x, n);
        }
    })));
    let result = run_chunks(model, tokens, opts, n_chunks, collector, &mut on_chunk);
    model.set_observer(None);
    result
}

fn run_chunks(
    model: &Model,
    tokens: &[u32],
    opts: &CollectOptions,
    n_chunks: usize,
    collector: &Arc<Mutex<Collector>>,
    on_chunk: &mut impl FnMut(usize, &PplStats),
) -> Result<PplStats, CollectError> {
    let n_ctx = opts.n_ctx;
    let first = n_ctx / 2;
    // llama-imatrix asks for every logit (so that output.weight sees all rows); without
    // --process-output only the scored ones are needed.
    let wanted = match (opts.process_output, opts.compute_ppl) {
        (true, _) => 0..n_ctx,
        (false, true) => first..n_ctx - 1,
        (false, false) => n_ctx..n_ctx,
    };
    let mut state = model.new_state(n_ctx);
    let mut stats = PplStats::default();
    for chunk in 0..n_chunks {
        let toks = &tokens[chunk * n_ctx..(chunk + 1) * n_ctx];
        let mut input = toks.to_vec();
        if let Some(bos) = opts.bos {
            input[0] = bos;
        }
        state.cache.truncate(0);
        model.forward(&mut state, &input, wanted.clone(), |i, logits| {
            if opts.compute_ppl && i >= first && i < n_ctx - 1 {
                stats.add(log_softmax_at(logits, toks[i + 1] as usize));
            }
        })?;
        collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check()?;
        on_chunk(chunk, &stats);
    }
    Ok(stats)
}
