//! The key/value cache (F16, as llama.cpp's default) and causal attention over it.

use super::vmath;
use crate::kernels::matmul::Parallel;
use half::f16;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfBitsVecExt;
use vmath::LANES;

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
    /// The keys again, transposed in groups of 16 positions for the tiled q·k (empty where the
    /// tiled products are not available): `kt[il][(g·n_embd_k + e)·16 + j % 16]` is element `e`
    /// of position `j = 16g + j % 16`. (layer, n_ctx / 16, n_embd_k, 16)
    kt: Vec<Vec<f16>>,
    /// Whether every value ever stored in layer `il` is finite (the tiled kqv then skips no
    /// zero weights: multiplying them in adds exactly nothing).
    v_finite: Vec<bool>,
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
            kt: (0..n_layer)
                .map(|_| {
                    if dot::tile_available(n_embd_k, LANES) {
                        // Zeroed pages from the allocator: only the groups written take memory.
                        vec![0u16; n_ctx.next_multiple_of(LANES) * n_embd_k].reinterpret_into()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            v_finite: vec![true; n_layer],
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
        let rows: usize = self
            .k
            .iter()
            .chain(&self.v)
            .chain(&self.kt)
            .map(Vec::len)
            .sum();
        rows * std::mem::size_of::<f16>()
    }

    /// Stores keys and values of `n` new tokens of layer `il` at positions `len..len + n`
    /// (the caller has checked capacity). `len` advances once per forward pass via [`commit`].
    ///
    /// [`commit`]: KvCache::commit
    pub fn store(&mut self, il: usize, k: &[f32], v: &[f32]) {
        let n = k.len() / self.n_embd_k;
        let ks = &mut self.k[il][self.len * self.n_embd_k..(self.len + n) * self.n_embd_k];
        ks.convert_from_f32_slice(&k[..ks.len()]);
        if !self.kt[il].is_empty() {
            let e = self.n_embd_k;
            for (t, row) in ks.chunks_exact(e).enumerate() {
                let j = self.len + t;
                let group = &mut self.kt[il][j / LANES * e * LANES..][..e * LANES];
                for (d, &x) in group.iter_mut().skip(j % LANES).step_by(LANES).zip(row) {
                    *d = x;
                }
            }
        }
        let vs = &mut self.v[il][self.len * self.n_embd_v..(self.len + n) * self.n_embd_v];
        vs.convert_from_f32_slice(&v[..vs.len()]);
        self.v_finite[il] &= vs.iter().all(|x| x.is_finite());
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
/// values. Writes (n, n_head*head_dim_v) to `out`. One task per head and tile of
/// `dot::TILE` tokens (a batch, on CPUs with the tiled products), else per (token, head).
///
/// As llama.cpp without flash attention: `kq = mul_mat(k, q)` with the queries rounded to f16,
/// `soft_max_ext`, the weights rounded to f16, `kqv = mul_mat(v, kq)` over the (transposed) value
/// cache. Each dot product is summed in the order of the path ggml takes on x86: llamafile's
/// tinyBLAS for a batch of two or more tokens, `ggml_vec_dot_f16` for one (see [`dot`]). A tile
/// reads each key and value once for all its tokens — the keys from the transposed copy, sixteen
/// keys to a vector — and every output element is still summed exactly as for one token alone.
pub fn attention(
    cache: &KvCache,
    il: usize,
    p: &AttnParams,
    q: &[f32],
    out: &mut [f32],
    par: &(impl Parallel + ?Sized),
) {
    attention_tiled(cache, il, p, q, out, par, true)
}

/// [`attention`], with `tiled` choosing whether a batch goes [`dot::TILE`] queries per task
/// (where the CPU allows) or one; both give the same bits.
fn attention_tiled(
    cache: &KvCache,
    il: usize,
    p: &AttnParams,
    q: &[f32],
    out: &mut [f32],
    par: &(impl Parallel + ?Sized),
    tiled: bool,
) {
    let n = q.len() / (p.n_head * p.head_dim);
    assert!(
        out.len() >= n * p.n_head * p.head_dim_v,
        "attention output too small"
    );
    let order = if n >= 2 {
        dot::Order::TinyBlas
    } else {
        dot::Order::VecDot
    };
    // The tiles read the transposed keys, which the cache keeps where the tiles are available.
    let block = if tiled
        && order == dot::Order::TinyBlas
        && dot::tile_available(p.head_dim, p.head_dim_v)
        && !cache.kt[il].is_empty()
    {
        dot::TILE
    } else {
        1
    };
    let out_ptr = SharedOut(out.as_mut_ptr());
    par.run(n.div_ceil(block) * p.n_head, &|task| {
        let (b, h) = (task / p.n_head, task % p.n_head);
        let tokens = b * block..((b + 1) * block).min(n);
        SCRATCH.with_borrow_mut(|s| {
            if block == 1 {
                attend_one(cache, il, p, order, q, &out_ptr, tokens.start, h, s);
            } else {
                attend_tile(cache, il, p, q, &out_ptr, tokens, h, s);
            }
        });
    });
}

/// The output slice of token `t`, head `h`, as a raw pointer.
fn out_head(out: &SharedOut, p: &AttnParams, t: usize, h: usize) -> *mut f32 {
    // SAFETY: `attention` asserted `out` holds (n, n_head, head_dim_v) floats and t < n.
    unsafe { out.get().add((t * p.n_head + h) * p.head_dim_v) }
}

/// The first position token `pos` attends to.
fn first_pos(p: &AttnParams, pos: usize) -> usize {
    p.window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// Attention of token `t`, head `h`, alone.
#[allow(clippy::too_many_arguments)]
fn attend_one(
    cache: &KvCache,
    il: usize,
    p: &AttnParams,
    order: dot::Order,
    q: &[f32],
    out: &SharedOut,
    t: usize,
    h: usize,
    s: &mut Scratch,
) {
    let pos = cache.len + t;
    let first = first_pos(p, pos);
    let kvh = h / (p.n_head / p.n_head_kv);
    let qh = &q[(t * p.n_head + h) * p.head_dim..][..p.head_dim];
    // SAFETY: task (t, h) is the only writer of this head_dim_v-wide slice of `out`, which
    // outlives `par.run`; the bounds were asserted in `attention`.
    let o = unsafe { std::slice::from_raw_parts_mut(out_head(out, p, t, h), p.head_dim_v) };
    s.q16.clear();
    s.q16.extend_from_slice(qh);
    dot::round_to_f16(&mut s.q16);
    // ggml's rows span the whole KV view (a multiple of 256 cells), so the soft_max's groups of
    // 16 start at cell 0 and the padding (masked, weight 0) completes the last group.
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
}

/// Attention of the tokens `tokens` (at most [`dot::TILE`], a batch of two or more), head `h`,
/// through the tiled products: each key and value row is read once for all of them. Every
/// number is computed as [`attend_one`] computes it.
#[allow(clippy::too_many_arguments)]
fn attend_tile(
    cache: &KvCache,
    il: usize,
    p: &AttnParams,
    q: &[f32],
    out: &SharedOut,
    tokens: std::ops::Range<usize>,
    h: usize,
    s: &mut Scratch,
) {
    let nq = tokens.len();
    let (pos_lo, pos_hi) = (cache.len + tokens.start, cache.len + tokens.end - 1);
    let kvh = h / (p.n_head / p.n_head_kv);
    // (TILE, head_dim) the queries rounded to f16; rows past nq are zero and their results
    // unused.
    s.q16.resize(dot::TILE * p.head_dim, 0.0);
    for (i, t) in tokens.clone().enumerate() {
        s.q16[i * p.head_dim..][..p.head_dim]
            .copy_from_slice(&q[(t * p.n_head + h) * p.head_dim..][..p.head_dim]);
    }
    s.q16[nq * p.head_dim..dot::TILE * p.head_dim].fill(0.0);
    dot::round_to_f16(&mut s.q16);
    // (TILE, row_len) the scores; row i is token i's own row of `attend_one` followed by cells
    // it does not see. The product writes whole groups of 16 keys from the first one any token
    // sees, the loop below every other cell of rows 0..nq, so stale values need no clearing.
    let row_len = (pos_hi + 1).next_multiple_of(LANES);
    if s.scores.len() < dot::TILE * row_len {
        s.scores.resize(dot::TILE * row_len, 0.0);
    }
    dot::kq_tile(
        &cache.kt[il][kvh * p.head_dim * LANES..],
        cache.n_embd_k,
        first_pos(p, pos_lo) / LANES..row_len / LANES,
        &s.q16,
        p.kq_scale,
        &mut s.scores,
        row_len,
    );
    let mut outs = [std::ptr::null_mut(); dot::TILE];
    for (i, out_i) in outs.iter_mut().enumerate().take(nq) {
        let pos = pos_lo + i;
        let row = &mut s.scores[i * row_len..][..row_len];
        let own_len = (pos + 1).next_multiple_of(LANES);
        let (own, past) = row.split_at_mut(own_len);
        let (seen, unseen) = own.split_at_mut(pos + 1);
        seen[..first_pos(p, pos)].fill(f32::NEG_INFINITY);
        unseen.fill(f32::NEG_INFINITY);
        softmax_to_f16(own);
        // Positions of later tokens in the tile weigh zero for this one.
        past.fill(0.0);
        *out_i = out_head(out, p, tokens.start + i, h);
    }
    let v = &cache.v[il][kvh * p.head_dim_v..];
    for (c, outs) in outs[..nq].chunks(dot::KQV_TILE).enumerate() {
        let i0 = c * dot::KQV_TILE;
        let keys = first_pos(p, pos_lo + i0)..pos_lo + i0 + outs.len();
        // SAFETY: task (tokens, h) is the only writer of these head_dim_v-wide slices of `out`,
        // which outlives `par.run`; the bounds were asserted in `attention`.
        unsafe {
            dot::kqv_tile(
                v,
                cache.n_embd_v,
                &s.scores[i0 * row_len..],
                row_len,
                keys,
                cache.v_finite[il],
                outs,
                p.head_dim_v,
                &mut s.acc,
            );
        }
    }
}

/// `ops::softmax` of one row followed by `dot::round_to_f16`, with the vector maximum and the
/// scaling and rounding in one pass (the same bits).
fn softmax_to_f16(x: &mut [f32]) {
    let sum = vmath::soft_max_row(x, dot::max(x));
    dot::scale_round_to_f16(x, (1.0 / sum) as f32);
}

/// Per-thread buffers of one attention task, reused across tasks and calls.
#[derive(Default)]
struct Scratch {
    q16: Vec<f32>,    // (tile or 1, head_dim) the queries rounded to f16
    scores: Vec<f32>, // (tile or 1, positions rounded up to 16) q·k, then the softmax weights
    row: Vec<f32>,    // (max(head_dim, head_dim_v)) one widened cache row
    acc: Vec<f32>,    // (tile or 1, lanes, head_dim_v) the lane accumulators of kqv
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::ScopedThreads;

    fn noise(seed: &mut u32, scale: f32) -> f32 {
        crate::testing::xorshift(seed) * scale
    }

    /// Runs `n` new tokens after `pos0` cached ones, tiled and one query at a time, and
    /// compares the outputs bit for bit.
    /// With `inf_v`, one value of the last position is infinite: the tokens before it weigh it
    /// zero and must not see it.
    fn check(p: &AttnParams, pos0: usize, n: usize, threads: usize, inf_v: bool, seed: &mut u32) {
        let (n_embd_k, n_embd_v) = (p.n_head_kv * p.head_dim, p.n_head_kv * p.head_dim_v);
        let mut cache = KvCache::new(2, pos0 + n + 3, n_embd_k, n_embd_v);
        let total = pos0 + n;
        // Wide keys and queries make the softmax peaky, so that many weights round to f16
        // zero (the products skip those).
        let k: Vec<f32> = (0..total * n_embd_k).map(|_| noise(seed, 8.0)).collect();
        let mut v: Vec<f32> = (0..total * n_embd_v).map(|_| noise(seed, 2.0)).collect();
        if inf_v {
            v[(total - 1) * n_embd_v + 1] = f32::INFINITY;
        }
        // The cached tokens, then the new ones (stored before attention, as the model does).
        cache.store(1, &k[..pos0 * n_embd_k], &v[..pos0 * n_embd_v]);
        cache.commit(pos0);
        cache.store(1, &k[pos0 * n_embd_k..], &v[pos0 * n_embd_v..]);
        assert_eq!(cache.v_finite[1], !inf_v);
        if !cache.kt[1].is_empty() {
            for (j, row) in k.chunks_exact(n_embd_k).enumerate() {
                for (e, &x) in row.iter().enumerate() {
                    let t = cache.kt[1][((j / LANES) * n_embd_k + e) * LANES + j % LANES];
                    assert_eq!(t, f16::from_f32(x), "transposed key {j} element {e}");
                }
            }
        }
        let q: Vec<f32> = (0..n * p.n_head * p.head_dim)
            .map(|_| noise(seed, 8.0))
            .collect();
        let size = n * p.n_head * p.head_dim_v;
        let (mut tiled, mut single) = (vec![f32::NAN; size], vec![f32::NAN; size]);
        let par = ScopedThreads::new(threads);
        attention_tiled(&cache, 1, p, &q, &mut tiled, &par, true);
        attention_tiled(&cache, 1, p, &q, &mut single, &par, false);
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&tiled),
            bits(&single),
            "hd {} window {:?} pos0 {pos0} n {n}",
            p.head_dim,
            p.window
        );
        // The infinity (if any) is the last token's alone.
        let last = (n - 1) * p.n_head * p.head_dim_v;
        assert!(tiled[..last].iter().all(|x| x.is_finite()));
        assert!(inf_v || tiled[last..].iter().all(|x| x.is_finite()));
    }

    /// The tiled path (several queries per task, where the CPU has it) gives exactly the bits
    /// of one query per task: odd token counts (a partial last tile), GQA, a sliding window,
    /// head widths of llama (64), gemma3 (256), key and value heads of different widths,
    /// widths the tiles do not take (40, 24), and value caches with and without an infinity.
    #[test]
    fn tiled_attention_equals_per_query_bit_for_bit() {
        let mut seed = 0x9e37_79b9u32;
        let heads = [
            (9, 3, 64, 64),
            (4, 1, 256, 256),
            (6, 2, 48, 32),
            (2, 2, 40, 24),
        ];
        for (n_head, n_head_kv, head_dim, head_dim_v) in heads {
            for window in [None, Some(5), Some(40)] {
                let p = AttnParams {
                    n_head,
                    n_head_kv,
                    head_dim,
                    head_dim_v,
                    kq_scale: 1.0 / (head_dim as f32).sqrt(),
                    window,
                };
                for (pos0, n) in [(0, 2), (0, 7), (13, 5), (3, 64), (30, 33), (250, 21)] {
                    check(&p, pos0, n, 1 + n % 2, false, &mut seed);
                }
                // Value rows with an infinity take the masked kqv.
                for (pos0, n) in [(0, 7), (3, 64)] {
                    check(&p, pos0, n, 1, true, &mut seed);
                }
            }
        }
        eprintln!(
            "tiled path available for 64/64: {}",
            dot::tile_available(64, 64)
        );
    }

    /// Prefill attention time (one thread, the best of several runs) for the geometries of
    /// SmolLM2 (9 heads over 3, width 64) and gemma3 (4 over 1, width 256): a quick A/B probe,
    /// `cargo test --release --lib attention_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn attention_speed() {
        let mut seed = 5u32;
        for (n_head, n_head_kv, hd) in [(9, 3, 64), (4, 1, 256)] {
            let p = AttnParams {
                n_head,
                n_head_kv,
                head_dim: hd,
                head_dim_v: hd,
                kq_scale: 1.0 / (hd as f32).sqrt(),
                window: None,
            };
            let n = 512;
            let mut cache = KvCache::new(1, n, n_head_kv * hd, n_head_kv * hd);
            let k: Vec<f32> = (0..n * n_head_kv * hd)
                .map(|_| noise(&mut seed, 2.0))
                .collect();
            let v: Vec<f32> = (0..n * n_head_kv * hd)
                .map(|_| noise(&mut seed, 2.0))
                .collect();
            cache.store(0, &k, &v);
            let q: Vec<f32> = (0..n * n_head * hd)
                .map(|_| noise(&mut seed, 2.0))
                .collect();
            let mut out = vec![0f32; n * n_head * hd];
            let par = ScopedThreads::new(1);
            let best = (0..40)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    attention_tiled(&cache, 0, &p, &q, &mut out, &par, true);
                    t0.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "{n_head}/{n_head_kv} heads of {hd}, {n} tokens: {:.3} ms",
                best * 1e3
            );
        }
    }
}
