//! Transformer models over GGUF weights. `config.rs` reads hyperparameters, `loader.rs` finds
//! and checks the weights, `llama.rs` / `gemma3.rs` are the forward passes, built from the
//! shared steps below.

pub mod config;
mod gemma3;
pub mod kv_cache;
mod llama;
pub mod loader;
pub mod ops;
mod vmath;

use crate::kernels::{matmul_many_with, matmul_with, MatmulError, MatmulScratch};
use crate::threadpool::ThreadPool;
use config::{Arch, Config};
use ggml_compat::gguf::{GgufError, GgufFile};
use ggml_compat::GgmlType;
use kv_cache::KvCache;
use loader::{Layer, Matrix, Weights};
use std::ops::Range;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: missing metadata key {key}")]
    MissingKey { path: String, key: String },
    #[error("{path}: metadata key {key}: {why}")]
    BadKey {
        path: String,
        key: String,
        why: String,
    },
    #[error("{path}: architecture {arch:?} is not supported (kiln runs llama and gemma3)")]
    UnknownArch { path: String, arch: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: String, what: String },
    #[error("{path}: tensor {name} is missing")]
    MissingTensor { path: String, name: String },
    #[error("{path}: tensor {name} has shape {got:?}, expected {want:?}")]
    BadShape {
        path: String,
        name: String,
        want: Vec<u64>,
        got: Vec<u64>,
    },
    #[error("{path}: tensor {name} has type {ty}, which kiln cannot compute with yet")]
    UnsupportedType {
        path: String,
        name: String,
        ty: GgmlType,
    },
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    BadToken { id: u32, n_vocab: usize },
    #[error("context full: {have} positions used + {adding} new > {n_ctx}")]
    ContextFull {
        have: usize,
        adding: usize,
        n_ctx: usize,
    },
    #[error("matrix multiply: {0}")]
    Matmul(String),
}

/// A loaded model: the mapped file, its hyperparameters and its weight views.
pub struct Model {
    pub file: GgufFile,
    pub config: Config,
    pub weights: Weights,
    /// Threads for matrix multiplies and attention.
    pub pool: ThreadPool,
    /// Activation buffer of the matmuls, reused across calls.
    scratch: std::sync::Mutex<MatmulScratch>,
    observer: std::sync::Mutex<Option<Observer>>,
}

/// Called with `(weight tensor name, input rows (n, cols), n)` before each matrix multiply.
pub type Observer = Box<dyn FnMut(&str, &[f32], usize) + Send>;

/// Per-sequence state: the KV cache and the activation buffers, allocated once and reused.
pub struct State {
    pub cache: KvCache,
    buf: Buffers,
    /// Tokens in the batch being evaluated.
    n: usize,
}

impl State {
    /// The residual stream of the current batch, (n, n_embd) rows.
    pub fn hidden(&self) -> &[f32] {
        &self.buf.x
    }
}

/// Activation buffers for a batch of `n` tokens (shapes in comments).
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,           // (n, n_embd) residual stream
    xn: Vec<f32>,          // (n, n_embd) normalized input of a sub-block
    q: Vec<f32>,           // (n, n_head*head_dim)
    k: Vec<f32>,           // (n, n_head_kv*head_dim)
    v: Vec<f32>,           // (n, n_head_kv*head_dim_v)
    attn: Vec<f32>,        // (n, n_head*head_dim_v)
    o: Vec<f32>,           // (n, n_embd) sub-block output
    gate: Vec<f32>,        // (n, n_ff)
    up: Vec<f32>,          // (n, n_ff)
    rope: ops::RopeTables, // (n, n_rot) cos/sin of the batch's positions, per RoPE setting
}

/// Rows of the output projection computed at once when producing many logits.
const LOGIT_ROWS: usize = 16;
/// The most rows of one output-projection chunk: a remainder of fewer than 8 rows joins the
/// chunk before it (see [`logit_chunk`]).
const MAX_LOGIT_ROWS: usize = LOGIT_ROWS + 7;

/// Rows of the next output-projection chunk when `left` rows remain. ggml multiplies all the
/// output rows of a batch at once, and some orders depend on that batch size (tinyBLAS F16 from
/// 2 rows, the tiled Q6_K from 8, repacked Q4_0/Q4_K in groups of 4 from the batch start). Chunks
/// of 16 (a multiple of 4) with a short remainder joined to the last chunk keep every row in the
/// order the whole batch would give it: each chunk has at least 8 rows unless the whole batch has
/// fewer, and then it is one chunk.
fn logit_chunk(left: usize) -> usize {
    if left <= MAX_LOGIT_ROWS {
        left
    } else {
        LOGIT_ROWS
    }
}

impl Model {
    /// Opens `path`, reads its hyperparameters and checks every weight.
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Model, ModelError> {
        let file = GgufFile::open(path)?;
        let config = Config::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        let pool = ThreadPool::new(threads.max(1));
        Ok(Model {
            file,
            config,
            weights,
            pool,
            scratch: Default::default(),
            observer: Default::default(),
        })
    }

    /// A fresh state with room for `n_ctx` positions.
    pub fn new_state(&self, n_ctx: usize) -> State {
        let c = &self.config;
        State {
            cache: KvCache::new(c.n_layer, n_ctx, c.n_embd_k(), c.n_embd_v()),
            buf: Buffers::default(),
            n: 0,
        }
    }

    /// Evaluates `tokens` at the next positions of `state` and returns the logits of the last one.
    pub fn forward_last(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.begin(state, tokens)?;
        for il in 0..self.config.n_layer {
            self.forward_layer(state, il)?;
        }
        state.cache.commit(n);
        // As `logits` for the last row alone, written straight into the returned vector.
        let c = &self.config;
        let buf = &mut state.buf;
        let xn = &mut buf.xn[..c.n_embd];
        ops::rms_norm(
            &buf.x[(n - 1) * c.n_embd..][..c.n_embd],
            &self.weights.output_norm,
            c.rms_eps,
            xn,
        );
        let mut logits = vec![0f32; c.n_vocab];
        self.mm(&self.weights.output, xn, 1, &mut logits)?;
        if let Some(cap) = c.final_softcap {
            logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        Ok(logits)
    }

    /// Evaluates `tokens` at the next positions of `state`, then calls `on_logits(i, logits)` for
    /// each batch index `i` in `wanted` (in order), without holding all logits at once.
    pub fn forward(
        &self,
        state: &mut State,
        tokens: &[u32],
        wanted: Range<usize>,
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        let n = tokens.len();
        if n == 0 {
            return Ok(());
        }
        self.begin(state, tokens)?;
        for il in 0..self.config.n_layer {
            self.forward_layer(state, il)?;
        }
        state.cache.commit(n);
        self.logits(
            &mut state.buf,
            wanted.start.min(n)..wanted.end.min(n),
            &mut on_logits,
        )
    }

    /// Checks `tokens` and puts their embeddings in `state`'s residual stream: the first step of
    /// a forward pass, which [`Model::forward_layer`] then advances layer by layer.
    pub fn begin(&self, state: &mut State, tokens: &[u32]) -> Result<(), ModelError> {
        let c = &self.config;
        let n = tokens.len();
        let cache = &state.cache;
        if cache.len() + n > cache.n_ctx() {
            return Err(ModelError::ContextFull {
                have: cache.len(),
                adding: n,
                n_ctx: cache.n_ctx(),
            });
        }
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::BadToken {
                id,
                n_vocab: c.n_vocab,
            });
        }
        state.buf.resize(c, n);
        self.embed(tokens, &mut state.buf.x);
        state.n = n;
        Ok(())
    }

    /// Runs layer `il` over the batch in `state` (at the positions after the cached ones; the
    /// cache only advances when [`Model::forward`] finishes, so calibration can run one layer
    /// over many chunks with one state).
    pub fn forward_layer(&self, state: &mut State, il: usize) -> Result<(), ModelError> {
        let (n, pos0) = (state.n, state.cache.len());
        match self.config.arch {
            Arch::Llama => llama::layer(self, il, state, n, pos0),
            Arch::Gemma3 => gemma3::layer(self, il, state, n, pos0),
        }
    }

    /// Replaces the residual stream of `state` with `x` ((n, n_embd) rows), as if a batch of n
    /// tokens had just been embedded: layer-by-layer calibration resumes saved hidden states.
    pub fn set_hidden(&self, state: &mut State, x: &[f32]) {
        let n = x.len() / self.config.n_embd;
        state.buf.resize(&self.config, n);
        state.buf.x.copy_from_slice(&x[..n * self.config.n_embd]);
        state.n = n;
    }

    /// Sees the input of every matrix multiply from now on (`None` stops it): calibration
    /// statistics (importance matrix, Hessians, activation samples).
    pub fn set_observer(&self, observer: Option<Observer>) {
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = observer;
    }

    /// Token embeddings into `x` (n, n_embd), scaled where the architecture says.
    fn embed(&self, tokens: &[u32], x: &mut [f32]) {
        let c = &self.config;
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(c.n_embd)) {
            self.weights
                .tok_embd
                .row_to_f32(&self.file, t as usize, row);
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
    }

    /// Final norm and output projection of the residual rows `rows`, a few at a time.
    fn logits(
        &self,
        buf: &mut Buffers,
        rows: Range<usize>,
        on_logits: &mut impl FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let mut out = vec![0f32; rows.len().min(MAX_LOGIT_ROWS) * c.n_vocab];
        let mut start = rows.start;
        while start < rows.end {
            let m = logit_chunk(rows.end - start);
            for i in 0..m {
                let x = &buf.x[(start + i) * c.n_embd..][..c.n_embd];
                let xn = &mut buf.xn[i * c.n_embd..][..c.n_embd];
                ops::rms_norm(x, &self.weights.output_norm, c.rms_eps, xn);
            }
            let logits = &mut out[..m * c.n_vocab];
            self.mm(&self.weights.output, &buf.xn[..m * c.n_embd], m, logits)?;
            for (i, l) in logits.chunks_exact_mut(c.n_vocab).enumerate() {
                if let Some(cap) = c.final_softcap {
                    l.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
                }
                on_logits(start + i, l);
            }
            start += m;
        }
        Ok(())
    }

    /// `out (n, rows) = x (n, cols) · mᵀ`.
    fn mm(&self, m: &Matrix, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let w = m
            .view(&self.file)
            .map_err(|e| ModelError::Matmul(e.to_string()))?;
        if let Some(obs) = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            obs(&m.name, x, n);
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        matmul_with(&self.pool, &mut scratch, &w, x, n, out)
            .map_err(|e| ModelError::Matmul(e.to_string()))
    }

    /// `outs[i] (n, rows) = x (n, cols) · ms[i]ᵀ` for matrices sharing their input: one pass
    /// over the thread pool for a single token (`matmul_many_with`), the same results as
    /// [`Model::mm`] on each.
    fn mm_many(
        &self,
        ms: &[&Matrix],
        x: &[f32],
        n: usize,
        outs: &mut [&mut [f32]],
    ) -> Result<(), ModelError> {
        let err = |e: MatmulError| ModelError::Matmul(e.to_string());
        let ws = ms
            .iter()
            .map(|m| m.view(&self.file))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        if let Some(obs) = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            ms.iter().for_each(|m| obs(&m.name, x, n));
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        matmul_many_with(&self.pool, &mut scratch, &ws, x, n, outs).map_err(err)
    }

    /// q, k, v projections of the normalized input `buf.xn` for layer `l`.
    fn project_qkv(&self, l: &Layer, buf: &mut Buffers, n: usize) -> Result<(), ModelError> {
        let xn = &buf.xn[..n * self.config.n_embd];
        let outs: &mut [&mut [f32]] = &mut [&mut buf.q, &mut buf.k, &mut buf.v];
        self.mm_many(&[&l.wq, &l.wk, &l.wv], xn, n, outs)
    }

    /// RoPE on `buf.q` and `buf.k` of `n` tokens starting at position `pos0`, with layer `il`'s
    /// parameters.
    fn rope(&self, il: usize, buf: &mut Buffers, n: usize, pos0: usize) {
        let c = &self.config;
        let rope = c.rope_for(il);
        let freqs = self.weights.rope_freqs.as_deref().filter(|_| !c.is_swa(il));
        let (qw, kw) = (c.n_head * c.head_dim, c.n_embd_k());
        if rope.n_rot == 0 {
            return; // nothing rotates
        }
        let table = buf.rope.get(&rope, pos0..pos0 + n, freqs);
        // Token t rotates by its own angles (row t of `table`); tokens shared among the threads.
        let (kind, n_rot, hd) = (rope.kind, rope.n_rot, c.head_dim);
        for (x, width) in [(&mut buf.q[..n * qw], qw), (&mut buf.k[..n * kw], kw)] {
            let f = |t0: usize, run: &mut [f32]| {
                for (x, cs) in run
                    .chunks_exact_mut(width)
                    .zip(table.chunks_exact(n_rot).skip(t0))
                {
                    ops::rope_apply(kind, n_rot, hd, cs, x);
                }
            };
            ops::par_rows_mut(&self.pool, x, width, &f);
        }
    }

    /// Stores k/v in the cache, attends, and projects: `buf.o = wo · attention(q, cache)`.
    fn attend(
        &self,
        il: usize,
        l: &Layer,
        state: &mut State,
        n: usize,
        kq_scale: f32,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let buf = &mut state.buf;
        state.cache.store(il, &buf.k, &buf.v);
        let params = kv_cache::AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            kq_scale,
            window: c.swa_window.filter(|_| c.is_swa(il)),
        };
        kv_cache::attention(&state.cache, il, &params, &buf.q, &mut buf.attn, &self.pool);
        self.mm(&l.wo, &buf.attn, n, &mut buf.o)
    }

    /// The gated feed-forward block of layer `il`:
    /// `buf.o = down · (act(gate · xn) * (up · xn))` with `xn = ffn_norm(buf.x)`.
    fn ffn(
        &self,
        il: usize,
        l: &Layer,
        buf: &mut Buffers,
        n: usize,
        gate: Gate,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        self.norm_rows(&buf.x, &l.ffn_norm, &mut buf.xn, n);
        let xn = &buf.xn[..n * c.n_embd];
        dump("ffn_norm", il, xn);
        let outs: &mut [&mut [f32]] = &mut [&mut buf.gate, &mut buf.up];
        self.mm_many(&[&l.w_gate, &l.w_up], xn, n, outs)?;
        dump("ffn_gate", il, &buf.gate);
        dump("ffn_up", il, &buf.up);
        match gate {
            Gate::Silu => {
                let f = |g: &mut [f32], u: &[f32]| ops::swiglu(g, u, c.n_ff);
                ops::par_rows(&self.pool, &mut buf.gate, &buf.up, c.n_ff, &f);
                dump("ffn_swiglu", il, &buf.gate);
            }
            Gate::Gelu => {
                ops::par_rows(&self.pool, &mut buf.gate, &buf.up, c.n_ff, &ops::geglu);
                dump("ffn_geglu", il, &buf.gate);
            }
        }
        self.mm(&l.w_down, &buf.gate, n, &mut buf.o)?;
        dump("ffn_out", il, &buf.o);
        Ok(())
    }

    /// `buf.xn[t] = rms_norm(src[t]) * w` for each of `n` rows, the rows shared among the
    /// pool's threads.
    fn norm_rows(&self, src: &[f32], w: &[f32], dst: &mut [f32], n: usize) {
        let (d, eps) = (w.len(), self.config.rms_eps);
        let f = |o: &mut [f32], s: &[f32]| {
            for (s, o) in s.chunks_exact(d).zip(o.chunks_exact_mut(d)) {
                ops::rms_norm(s, w, eps, o);
            }
        };
        ops::par_rows(&self.pool, &mut dst[..n * d], &src[..n * d], d, &f);
    }

    /// In-place [`ops::rms_norm_chunks`] of `x` (per-head q/k norms, gemma3's post-norms), the
    /// rows shared among the pool's threads.
    fn norm_chunks(&self, x: &mut [f32], w: &[f32]) {
        let eps = self.config.rms_eps;
        let f = |_: usize, run: &mut [f32]| ops::rms_norm_chunks(run, w, eps);
        ops::par_rows_mut(&self.pool, x, w.len(), &f);
    }
}

/// The activation of a gated feed-forward block.
#[derive(Clone, Copy)]
enum Gate {
    /// SwiGLU (llama).
    Silu,
    /// GELU, tanh form (gemma3).
    Gelu,
}

/// Debug hook for op-by-op comparison with llama.cpp (`tools/parity`): when `KILN_DUMP=DIR` is
/// set, writes `data` as raw little-endian f32 to `DIR/NAME-IL.f32`, named as llama.cpp's graph
/// names the tensor (`attn_norm`, `kqv_out`, `ffn_out`, `l_out`, ...), overwriting the previous
/// forward pass's file. One environment lookup per process when unset.
pub(crate) fn dump(name: &str, il: usize, data: &[f32]) {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    if let Some(dir) = DIR.get_or_init(|| std::env::var_os("KILN_DUMP").map(Into::into)) {
        let path = dir.join(format!("{name}-{il}.f32"));
        if let Err(e) = std::fs::write(&path, bytemuck::cast_slice(data)) {
            eprintln!("KILN_DUMP: cannot write {}: {e}", path.display());
        }
    }
}

impl Buffers {
    fn resize(&mut self, c: &Config, n: usize) {
        // Exact lengths (resize also shrinks): matmul takes its batch size from the slices.
        let size = |v: &mut Vec<f32>, len: usize| v.resize(len, 0.0);
        size(&mut self.x, n * c.n_embd);
        size(&mut self.xn, n.max(MAX_LOGIT_ROWS) * c.n_embd);
        size(&mut self.q, n * c.n_head * c.head_dim);
        size(&mut self.k, n * c.n_embd_k());
        size(&mut self.v, n * c.n_embd_v());
        size(&mut self.attn, n * c.n_head * c.head_dim_v);
        size(&mut self.o, n * c.n_embd);
        size(&mut self.gate, n * c.n_ff);
        size(&mut self.up, n * c.n_ff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks cover the rows exactly, start at multiples of 4, never exceed the buffers and
    /// never drop under 8 rows (or 2) when the whole batch has that many.
    #[test]
    fn logit_chunks_keep_the_whole_batch_orders() {
        for n in 0..200 {
            let mut start = 0;
            while start < n {
                let m = logit_chunk(n - start);
                assert!((1..=MAX_LOGIT_ROWS).contains(&m), "n {n}: chunk {m}");
                assert!(start % 4 == 0, "n {n}: chunk at {start}");
                assert!(m >= 8.min(n), "n {n}: chunk of {m} at {start}");
                start += m;
            }
            assert_eq!(start, n);
        }
    }
}
