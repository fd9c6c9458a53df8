//! The key/value cache (F16, as llama.cpp's default) and causal attention over it.

use super::vmath;
use crate::kernels::matmul::Parallel;
use half::f16;

mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_x86;

/// Keys and values of every layer for positions `0..len`.
pub struct KvCache {
    n_ctx: usize,
    n_embd_k: usize,
    n_embd_v: usize,
    k: Vec<Vec<f16>>, // (layer, n_ctx, n_embd_k)
    v: Vec<Vec<f16>>, // (layer, n_ctx, n_embd_v)
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, n_embd_k: usize, n_embd_v: usize) -> KvCache {
        KvCache {
            n_ctx,
            n_embd_k,
            n_embd_v,
            k: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * n_embd_k])
                .collect(),
            v: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * n_embd_v])
                .collect(),
            len: 0,
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forgets positions `n..` (to re-evaluate from there).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.k.len() * self.n_ctx * (self.n_embd_k + self.n_embd_v) * 2
    }

    /// Stores keys and values of `n` new tokens of layer `il` at positions `len..len + n`
    /// (the caller has checked capacity). `len` advances once per forward pass via [`commit`].
    ///
    /// [`commit`]: KvCache::commit
    pub fn store(&mut self, il: usize, k: &[f32], v: &[f32]) {
        let n = k.len() / self.n_embd_k;
        let ks = &mut self.k[il][self.len * self.n_embd_k..(self.len + n) * self.n_embd_k];
        for (d, &s) in ks.iter_mut().zip(k) {
            *d = f16::from_f32(s);
        }
        let vs = &mut self.v[il][self.len * self.n_embd_v..(self.len + n) * self.n_embd_v];
        for (d, &s) in vs.iter_mut().zip(v) {
            *d = f16::from_f32(s);
        }
    }

    /// Marks `n` stored positions as filled, after every layer has stored them.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }
}

/// Geometry and scaling of one layer's attention.
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Multiplier on q·k before the softmax (llama: 1/sqrt(head_dim); gemma3 pre-scales q).
    pub kq_scale: f32,
    /// Attend only to the last `window` positions (sliding-window layers).
    pub window: Option<usize>,
}

/// Causal attention of `n` new tokens (queries `q`, (n, n_head*head_dim)) at positions
/// `cache.len()..cache.len()+n` over layer `il` of the cache, which already holds their keys and
/// values. Writes (n, n_head*head_dim_v) to `out`. One task per (token, head).
///
/// As llama.cpp without flash attention: `kq = mul_mat(k, q)` with the queries rounded to f16,
/// `soft_max_ext`, the weights rounded to f16, `kqv = mul_mat(v, kq)` over the (transposed) value
/// cache. Each dot product is summed in the order of the path ggml takes on x86: llamafile's
/// tinyBLAS for a batch of two or more tokens, `ggml_vec_dot_f16` for one (see [`dot`]).
pub fn attention(
    cache: &KvCache,
    il: usize,
    p: &AttnParams,
    q: &[f32],
    out: &mut [f32],
    par: &(impl Parallel + ?Sized),
) {
    let n = q.len() / (p.n_head * p.head_dim);
    assert!(
        out.len() >= n * p.n_head * p.head_dim_v,
        "attention output too small"
    );
    let pos0 = cache.len;
    let group = p.n_head / p.n_head_kv;
    let order = if n >= 2 {
        dot::Order::TinyBlas
    } else {
        dot::Order::VecDot
    };
    let out_ptr = SharedOut(out.as_mut_ptr());
    par.run(n * p.n_head, &|task| {
        let (t, h) = (task / p.n_head, task % p.n_head);
        let pos = pos0 + t;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let kvh = h / group;
        let qh = &q[(t * p.n_head + h) * p.head_dim..][..p.head_dim];
        // SAFETY: task (t, h) is the only writer of this head_dim_v-wide slice of `out`, which
        // outlives `par.run`; the bounds were asserted above.
        let o = unsafe {
            std::slice::from_raw_parts_mut(
                out_ptr.get().add((t * p.n_head + h) * p.head_dim_v),
                p.head_dim_v,
            )
        };
        SCRATCH.with_borrow_mut(|s| {
            s.q16.clear();
            s.q16.extend_from_slice(qh);
            dot::round_to_f16(&mut s.q16);
            // ggml's rows span the whole KV view (a multiple of 256 cells), so the soft_max's
            // groups of 16 start at cell 0 and the padding (masked, weight 0) completes the last
            // group.
            s.scores.clear();
            s.scores
                .resize((pos + 1).next_multiple_of(vmath::LANES), f32::NEG_INFINITY);
            s.row.resize(p.head_dim.max(p.head_dim_v), 0.0);
            for j in first..=pos {
                let k = &cache.k[il][j * cache.n_embd_k + kvh * p.head_dim..][..p.head_dim];
                s.scores[j] = dot::kq(order, k, &s.q16, &mut s.row) * p.kq_scale;
            }
            super::ops::softmax(&mut s.scores);
            dot::round_to_f16(&mut s.scores);
            let v = &cache.v[il][kvh * p.head_dim_v..];
            dot::kqv(
                order,
                v,
                cache.n_embd_v,
                &s.scores[..=pos],
                o,
                &mut s.acc,
                &mut s.row,
            );
        });
    });
}

/// Per-thread buffers of one attention task, reused across tasks and calls.
#[derive(Default)]
struct Scratch {
    q16: Vec<f32>,    // (head_dim) the query rounded to f16
    scores: Vec<f32>, // (positions, rounded up to 16) q·k, then the softmax weights
    row: Vec<f32>,    // (max(head_dim, head_dim_v)) one widened cache row
    acc: Vec<f32>,    // (lanes, head_dim_v) the lane accumulators of kqv
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The output pointer shared by attention tasks that write disjoint slices.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint ranges (see `attention`).
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}
