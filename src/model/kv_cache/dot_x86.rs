//! The attention products of [`super::dot`] in AVX-512 F + F16C, reading the f16 cache
//! directly, for both of ggml's orders: `ACCS = 4` accumulators of 16 lanes is
//! `ggml_vec_dot_f16` (`Order::VecDot`, one token), `ACCS = 1` is llamafile's tinyBLAS
//! (`Order::TinyBlas`, a batch). Each lane does the fused multiply-adds of the portable code in
//! the same order and the reductions add the same pairs, so the results are bit-identical
//! (tested in `dot.rs`).

use super::super::vmath::LANES;
use core::arch::x86_64::*;
use half::f16;

/// The most queries [`kqv_tile`] takes at once.
pub const MAX_TILE_Q: usize = 4;

/// Whether this CPU runs the functions of this file.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("f16c")
}

/// The 16 halves at `h[0..16]`, widened.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
fn load_f16(h: &[f16]) -> __m512 {
    let h: &[f16; LANES] = h[..LANES].try_into().unwrap();
    // SAFETY: `h` is 32 readable bytes; the load is unaligned.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(h.as_ptr().cast()) })
}

/// The 16 floats at `x[0..16]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(x: &[f32]) -> __m512 {
    let x: &[f32; LANES] = x[..LANES].try_into().unwrap();
    // SAFETY: `x` is 16 readable floats; the load is unaligned.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// Stores `v` to `x[0..16]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store(x: &mut [f32], v: __m512) {
    let x: &mut [f32; LANES] = (&mut x[..LANES]).try_into().unwrap();
    // SAFETY: `x` is 16 writable floats; the store is unaligned.
    unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
}

/// Across the lanes of `v` in GCC's `_mm512_reduce_add_ps` order (`vmath::reduce_add_16`):
/// halves, then quarters, then `(q0 + q2) + (q1 + q3)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce_add(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let h = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let t = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)))
}

/// `k · q` as `dot::kq_lanes` with `k` still in f16, `ACCS` (1 or 4) accumulators of 16
/// lanes. `k.len()` must be a multiple of `16 · ACCS` and `q.len() == k.len()`.
#[target_feature(enable = "avx512f,f16c")]
pub fn kq<const ACCS: usize>(k: &[f16], q: &[f32]) -> f32 {
    let step = ACCS * LANES;
    debug_assert!(k.len().is_multiple_of(step) && q.len() == k.len());
    let mut acc = [_mm512_setzero_ps(); ACCS];
    for (k, q) in k.chunks_exact(step).zip(q.chunks_exact(step)) {
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(load_f16(&k[r * LANES..]), load(&q[r * LANES..]), *a);
        }
    }
    reduce_add(combine::<ACCS>(|r| acc[r]))
}

/// Accumulator `a(r)` for `r < ACCS` joined as ggml joins them before the lane reduction: one
/// is itself, four are `(a0 + a2) + (a1 + a3)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn combine<const ACCS: usize>(a: impl Fn(usize) -> __m512) -> __m512 {
    if ACCS == 4 {
        _mm512_add_ps(_mm512_add_ps(a(0), a(2)), _mm512_add_ps(a(1), a(3)))
    } else {
        a(0)
    }
}

/// `dot::kqv_lanes` with the value rows read as f16: `acc[lane][d]` gathers the positions `j`
/// with `j % (16 · ACCS) == lane`, then every output `d` is reduced over those lanes as ggml
/// reduces its `ACCS` accumulators — for 16 outputs at a time. `o.len()` must be a multiple of
/// 16.
#[target_feature(enable = "avx512f,f16c")]
pub fn kqv<const ACCS: usize>(
    v: &[f16],
    stride: usize,
    w: &[f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let hd = o.len();
    let lanes = ACCS * LANES;
    debug_assert!(hd.is_multiple_of(LANES));
    acc.clear();
    acc.resize(lanes * hd, 0.0);
    for (j, &wj) in w.iter().enumerate() {
        if wj == 0.0 {
            continue; // adds exactly zero
        }
        let row = &v[j * stride..][..hd];
        let a = &mut acc[(j % lanes) * hd..][..hd];
        let wv = _mm512_set1_ps(wj);
        for (a, x) in a.chunks_exact_mut(LANES).zip(row.chunks_exact(LANES)) {
            store(a, _mm512_fmadd_ps(load_f16(x), wv, load(a)));
        }
    }
    reduce_lanes::<ACCS>(acc, o);
}

/// The outputs `o[d]` from the lane accumulators `acc[lane][d]` of [`kqv`]: every output reduced
/// over its `16 · ACCS` lanes as ggml reduces its `ACCS` accumulators, 16 outputs at a time.
#[target_feature(enable = "avx512f")]
fn reduce_lanes<const ACCS: usize>(acc: &[f32], o: &mut [f32]) {
    let hd = o.len();
    assert!(hd.is_multiple_of(LANES) && acc.len() >= ACCS * LANES * hd);
    for d in (0..hd).step_by(LANES) {
        // s[l] joins the accumulators' lane l (a_r[l] is lane 16r + l). Plain loops, not
        // closures: a closure would not inherit this function's target features, and its
        // loads would become calls.
        let mut s = [_mm512_setzero_ps(); LANES];
        for (l, s) in s.iter_mut().enumerate() {
            let mut a = [_mm512_setzero_ps(); ACCS];
            for (r, a) in a.iter_mut().enumerate() {
                // SAFETY: (r·16 + l)·hd + d + 16 <= ACCS·16·hd <= acc.len() (asserted above);
                // the load is unaligned.
                *a = unsafe { _mm512_loadu_ps(acc.as_ptr().add((r * LANES + l) * hd + d)) };
            }
            *s = combine::<ACCS>(|r| a[r]);
        }
        // reduce_add_16 across s, every output at once.
        let mut h = [_mm512_setzero_ps(); 8];
        for (i, h) in h.iter_mut().enumerate() {
            *h = _mm512_add_ps(s[i], s[i + 8]);
        }
        let mut q = [_mm512_setzero_ps(); 4];
        for (i, q) in q.iter_mut().enumerate() {
            *q = _mm512_add_ps(h[i], h[i + 4]);
        }
        let r = _mm512_add_ps(_mm512_add_ps(q[0], q[2]), _mm512_add_ps(q[1], q[3]));
        store(&mut o[d..], r);
    }
}

/// [`kq`] in tinyBLAS order (`ACCS = 1`) for `Q` queries at once, over the transposed keys
/// `kt` of one head (`kt[(g·stride + d)·16 + l]` is element `d` of key `16g + l`):
/// `scores[i·row_len + 16g + l]` is key `16g + l` dotted with query `i` (`q[i·hd..][..hd]`,
/// `hd = q.len() / Q`), times `scale`, for every group `g` in `groups`.
///
/// The keys lie in the lanes: vector `P_m` (m < 16) of a query gathers, lane by lane, the
/// elements `d ≡ m (mod 16)` by fused multiply-adds in the order of `d` — exactly the lane `m`
/// of `kq::<1>`'s accumulator for each key. The lane reduction then adds the same pairs as
/// [`reduce_add`] (`P_m + P_m+8`, then `+4`, then `(q0 + q2) + (q1 + q3)`), sixteen keys at
/// once and with no shuffles. `hd` must be a multiple of 16.
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
pub fn kq_tile_t<const Q: usize>(
    kt: &[f16],
    stride: usize,
    groups: std::ops::Range<usize>,
    q: &[f32],
    scale: f32,
    scores: &mut [f32],
    row_len: usize,
) {
    let hd = q.len() / Q;
    assert!(hd.is_multiple_of(LANES) && q.len() == Q * hd);
    let scale = _mm512_set1_ps(scale);
    for g in groups {
        let block = &kt[g * stride * LANES..][..hd * LANES];
        let add = |a, b| _mm512_add_ps(a, b);
        // Quarter t_k = (P_k + P_k+8) + (P_k+4 + P_k+12) of every query.
        let mut t = [[_mm512_setzero_ps(); 4]; Q];
        if Q <= 4 {
            // One pass per quarter: Q·4 accumulators in registers.
            for k in 0..4 {
                let a = kq_pass::<Q, 4>(block, q, hd, [k, k + 4, k + 8, k + 12]);
                for (t, a) in t.iter_mut().zip(&a) {
                    t[k] = add(add(a[0], a[2]), add(a[1], a[3]));
                }
            }
        } else {
            // Two passes per quarter, one per half: Q·2 accumulators in registers.
            for k in 0..4 {
                let lo = kq_pass::<Q, 2>(block, q, hd, [k, k + 8]);
                let hi = kq_pass::<Q, 2>(block, q, hd, [k + 4, k + 12]);
                for ((t, lo), hi) in t.iter_mut().zip(&lo).zip(&hi) {
                    t[k] = add(add(lo[0], lo[1]), add(hi[0], hi[1]));
                }
            }
        }
        for (i, t) in t.iter().enumerate() {
            let r = add(add(t[0], t[2]), add(t[1], t[3]));
            store(
                &mut scores[i * row_len + g * LANES..],
                _mm512_mul_ps(r, scale),
            );
        }
    }
}

/// The lane accumulators `P_m` (m in `lanes`) of [`kq_tile_t`] for `Q` queries over one group's
/// keys `block` (`hd·16` halves): `a[i][r]` gathers the elements `d ≡ lanes[r] (mod 16)` of
/// query `i` by fused multiply-adds in the order of `d`.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
fn kq_pass<const Q: usize, const R: usize>(
    block: &[f16],
    q: &[f32],
    hd: usize,
    lanes: [usize; R],
) -> [[__m512; R]; Q] {
    assert!(block.len() >= hd * LANES && q.len() >= Q * hd && lanes.iter().all(|&m| m < LANES));
    let mut a = [[_mm512_setzero_ps(); R]; Q];
    for c in (0..hd).step_by(LANES) {
        for (r, &m) in lanes.iter().enumerate() {
            let d = c + m;
            // SAFETY: d < hd, so the 16 halves at d·16 lie in `block` (asserted above).
            let kv = _mm512_cvtph_ps(unsafe {
                _mm256_loadu_si256(block.as_ptr().add(d * LANES).cast())
            });
            for (i, a) in a.iter_mut().enumerate() {
                // SAFETY: i < Q and d < hd, inside `q` (asserted above).
                let qv = _mm512_set1_ps(unsafe { *q.get_unchecked(i * hd + d) });
                a[r] = _mm512_fmadd_ps(kv, qv, a[r]);
            }
        }
    }
    a
}

/// [`kqv`] in tinyBLAS order (`ACCS = 1`) for `outs.len()` queries at once: query `i` has the
/// weights `w[i·row_len..]` over the positions `keys` (zero past its own positions; every other
/// position weighs zero) and its output goes to `outs[i]` (`hd` wide). Each value row is widened
/// once for all queries; every output is summed exactly as `kqv::<1>` sums it. `w` holds
/// [`MAX_TILE_Q`] rows (those of absent queries are read but unused); `acc` is scratch space;
/// `hd` must be a multiple of 16. `finite` says every value in the rows of `keys` is finite
/// (zero weights then need no masking, see [`kqv_block`]).
///
/// # Safety
/// The CPU must have AVX-512 F and F16C, and every `outs[i]` must point to `hd` writable floats
/// that nothing else reads or writes during the call.
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn kqv_tile(
    v: &[f16],
    stride: usize,
    w: &[f32],
    row_len: usize,
    keys: std::ops::Range<usize>,
    finite: bool,
    outs: &[*mut f32],
    hd: usize,
    acc: &mut Vec<f32>,
) {
    let nq = outs.len();
    assert!(hd.is_multiple_of(LANES) && nq <= MAX_TILE_Q);
    assert!(keys.end <= row_len && w.len() >= MAX_TILE_Q * row_len);
    assert!(keys.is_empty() || (keys.end - 1) * stride + hd <= v.len());
    // Each query's lane accumulators of one block of columns (at most 4 vectors wide), padded by
    // two cache lines so that those of different queries do not sit a multiple of 4 KiB apart
    // (loads would wait on unrelated stores). Every element is written before it is read.
    let per_q = LANES * 4 * LANES + 2 * LANES;
    if acc.len() < MAX_TILE_Q * per_q {
        acc.resize(MAX_TILE_Q * per_q, 0.0);
    }
    // Columns in blocks of at most 4 vectors, so that the accumulators of every query stay in
    // registers; each block is reduced while its accumulators are still in L1.
    let mut c0 = 0;
    while c0 < hd {
        let nv = ((hd - c0) / LANES).min(4);
        let (acc, keys) = (&mut acc[..], keys.clone());
        // SAFETY: the asserts above bound every read of `v` and `w` and `acc` holds
        // MAX_TILE_Q·per_q floats.
        unsafe {
            match (nv, finite) {
                (4, true) => kqv_block::<4, false>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (3, true) => kqv_block::<3, false>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (2, true) => kqv_block::<2, false>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (_, true) => kqv_block::<1, false>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (4, false) => kqv_block::<4, true>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (3, false) => kqv_block::<3, true>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (2, false) => kqv_block::<2, true>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
                (_, false) => kqv_block::<1, true>(v, stride, w, row_len, keys, nq, c0, per_q, acc),
            }
        }
        let width = nv * LANES;
        for (i, &o) in outs.iter().enumerate() {
            // SAFETY: the caller guarantees `o` is `hd` floats this call alone accesses, and
            // c0 + width <= hd.
            let o = unsafe { std::slice::from_raw_parts_mut(o.add(c0), width) };
            reduce_lanes::<1>(&acc[i * per_q..][..LANES * width], o);
        }
        c0 += width;
    }
}

/// `x[i] = f16(x[i])` widened back, rounding to nearest even as F16C (and `half`) do.
#[target_feature(enable = "avx512f,f16c")]
pub fn round_to_f16(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(load(c));
        store(c, _mm512_cvtph_ps(h));
    }
    for v in chunks.into_remainder() {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// `x[i] = f16(x[i] · s)` widened back (`dot::scale_round_to_f16`).
#[target_feature(enable = "avx512f,f16c")]
pub fn scale_round_to_f16(x: &mut [f32], s: f32) {
    let sv = _mm512_set1_ps(s);
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let y = _mm512_mul_ps(load(c), sv);
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        store(c, _mm512_cvtph_ps(h));
    }
    for v in chunks.into_remainder() {
        *v = f16::from_f32(*v * s).to_f32();
    }
}

/// The largest element of `x`, NaN ignored (`dot::max`): `vmaxps` returns its second operand
/// when either is NaN, and the running maximum, never NaN, is that operand.
#[target_feature(enable = "avx512f")]
pub fn max(x: &[f32]) -> f32 {
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        m = _mm512_max_ps(load(c), m);
    }
    let mut lanes = [0f32; LANES];
    store(&mut lanes, m);
    lanes
        .iter()
        .chain(chunks.remainder())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Columns `c0..c0 + 16·NV` of [`kqv_tile`]: for each lane `l`, the positions `j ≡ l (mod 16)`
/// of `keys` are added in order into accumulators held in registers (one per query and vector),
/// then stored to `acc[i·per_q + l·16·NV..]` for the `nq` queries.
///
/// The one-query code skips a zero weight. With `MASKED`, a zero weight leaves its accumulator
/// untouched (a masked fused multiply-add). Without (for value rows that are all finite), the
/// zero weight is multiplied in: `fma(x, 0, a)` is `a + (±0)`, which is `a` bit for bit, since
/// the accumulator is never -0: it starts at +0, a sum that is exactly zero rounds to +0, and
/// products of two f16 values are never small enough for a nonzero sum to underflow to zero.
///
/// # Safety
/// The CPU must have AVX-512 F and F16C; `keys.end <= row_len`, `w` holds [`MAX_TILE_Q`] rows
/// of `row_len`, the value rows of `keys` lie in `v` (`(keys.end - 1)·stride + hd <= v.len()`),
/// the columns `c0..c0 + 16·NV` lie in every row, and `acc` holds `MAX_TILE_Q·per_q` floats
/// with `per_q >= 256·NV`.
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn kqv_block<const NV: usize, const MASKED: bool>(
    v: &[f16],
    stride: usize,
    w: &[f32],
    row_len: usize,
    keys: std::ops::Range<usize>,
    nq: usize,
    c0: usize,
    per_q: usize,
    acc: &mut [f32],
) {
    for l in 0..LANES {
        let mut a = [[_mm512_setzero_ps(); NV]; MAX_TILE_Q];
        // The first position of `keys` in lane l.
        let j0 = keys.start + (l + LANES - keys.start % LANES) % LANES;
        for j in (j0..keys.end).step_by(LANES) {
            let mut wv = [_mm512_setzero_ps(); MAX_TILE_Q];
            let mut mask: [__mmask16; MAX_TILE_Q] = [0xffff; MAX_TILE_Q];
            for (i, (wv, mask)) in wv.iter_mut().zip(&mut mask).enumerate() {
                // SAFETY: i < MAX_TILE_Q and j < keys.end <= row_len: inside `w`.
                *wv = _mm512_set1_ps(unsafe { *w.get_unchecked(i * row_len + j) });
                if MASKED {
                    // All ones where the weight is not zero. Softmax weights are never -0, so
                    // this is `w != 0` (NaN included).
                    let bits = _mm512_castps_si512(*wv);
                    *mask = _mm512_test_epi32_mask(bits, bits);
                }
            }
            if MASKED && mask.iter().fold(0, |m, &k| m | k) == 0 {
                continue; // adds exactly zero for every query
            }
            // SAFETY: j < keys.end, so the row's columns c0..c0 + 16·NV lie in `v`.
            let row = unsafe { v.as_ptr().add(j * stride + c0) };
            for c in 0..NV {
                // SAFETY: 16 halves inside the row (see above); the load is unaligned.
                let x = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(row.add(c * LANES).cast()) });
                for ((a, wv), mask) in a.iter_mut().zip(&wv).zip(&mask) {
                    a[c] = if MASKED {
                        _mm512_mask3_fmadd_ps(x, *wv, a[c], *mask)
                    } else {
                        _mm512_fmadd_ps(x, *wv, a[c])
                    };
                }
            }
        }
        for (i, a) in a.iter().enumerate().take(nq) {
            for (c, a) in a.iter().enumerate() {
                store(&mut acc[i * per_q + (l * NV + c) * LANES..], *a);
            }
        }
    }
}
