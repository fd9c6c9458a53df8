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

/// [`reduce_add`] of 16 vectors at once: lane `4i + s` of the result is the sum of `a[s][i]`,
/// each added pair for pair as `reduce_add` adds it (halves, quarters, then
/// `(q0 + q2) + (q1 + q3)`), with whole-vector shuffles doing the moving.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce_add_4x4(a: &[[__m512; 4]; 4]) -> __m512 {
    // Vector A_m (m = 4s + i) is a[s][i]. Halves: B_n has h(A_2n) in its low 256 bits and
    // h(A_2n+1) in its high ones.
    let v = |m: usize| a[m / 4][m % 4];
    let mut b = [_mm512_setzero_ps(); 8];
    for (n, b) in b.iter_mut().enumerate() {
        let (x, y) = (v(2 * n), v(2 * n + 1));
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y);
        *b = _mm512_add_ps(lo, hi);
    }
    // Quarters: 128-bit block k of C_n is q(A_4n+k).
    let mut c = [_mm512_setzero_ps(); 4];
    for (n, c) in c.iter_mut().enumerate() {
        let (x, y) = (b[2 * n], b[2 * n + 1]);
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y);
        *c = _mm512_add_ps(lo, hi);
    }
    // (q0 + q2, q1 + q3): block k of D_p is t(A_8p+k), t(A_8p+4+k).
    let mut d = [_mm512_setzero_ps(); 2];
    for (p, d) in d.iter_mut().enumerate() {
        let (x, y) = (c[2 * p], c[2 * p + 1]);
        let lo = _mm512_shuffle_ps::<0b01_00_01_00>(x, y);
        let hi = _mm512_shuffle_ps::<0b11_10_11_10>(x, y);
        *d = _mm512_add_ps(lo, hi);
    }
    // t0 + t1: block k is the sums of A_k, A_4+k, A_8+k, A_12+k.
    let lo = _mm512_shuffle_ps::<0b10_00_10_00>(d[0], d[1]);
    let hi = _mm512_shuffle_ps::<0b11_01_11_01>(d[0], d[1]);
    _mm512_add_ps(lo, hi)
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
    for d in (0..hd).step_by(LANES) {
        // s[l] joins the accumulators' lane l (a_r[l] is lane 16r + l). Plain loops, not
        // closures: a closure would not inherit this function's target features, and its
        // loads would become calls.
        let mut s = [_mm512_setzero_ps(); LANES];
        for (l, s) in s.iter_mut().enumerate() {
            let mut a = [_mm512_setzero_ps(); ACCS];
            for (r, a) in a.iter_mut().enumerate() {
                *a = load(&acc[(r * LANES + l) * hd + d..]);
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

/// [`kq`] in tinyBLAS order (`ACCS = 1`) for `Q` queries at once: `scores[i·row_len + j]` is
/// key row `j` (at `k[j·stride..]`) dotted with query `i` (`q[i·hd..][..hd]`, `hd = q.len() / Q`)
/// for every `j` in `keys`. Each key row is widened once and used for all `Q` queries; every
/// result is summed exactly as `kq::<1>` sums it. `hd` must be a multiple of 16.
#[target_feature(enable = "avx512f,f16c")]
pub fn kq_tile<const Q: usize>(
    k: &[f16],
    stride: usize,
    keys: std::ops::Range<usize>,
    q: &[f32],
    scores: &mut [f32],
    row_len: usize,
) {
    let hd = q.len() / Q;
    debug_assert!(hd.is_multiple_of(LANES));
    let q: &[f32] = &q[..Q * hd];
    let mut keys = keys;
    if Q == 4 {
        // Four keys at a time: the 16 sums reduced together (see `reduce_add_4x4`).
        while keys.len() >= 4 {
            let j0 = keys.start;
            let mut acc = [[_mm512_setzero_ps(); 4]; 4]; // (key, query)
            for c in (0..hd).step_by(LANES) {
                let mut qv = [_mm512_setzero_ps(); 4];
                for (i, qv) in qv.iter_mut().enumerate() {
                    *qv = load(&q[i * hd + c..]);
                }
                for (kk, acc) in acc.iter_mut().enumerate() {
                    let kv = load_f16(&k[(j0 + kk) * stride + c..]);
                    for (a, qv) in acc.iter_mut().zip(&qv) {
                        *a = _mm512_fmadd_ps(kv, *qv, *a);
                    }
                }
            }
            let mut r = [0f32; LANES];
            store(&mut r, reduce_add_4x4(&acc));
            for (i, r) in r.chunks_exact(4).enumerate() {
                scores[i * row_len + j0..][..4].copy_from_slice(r);
            }
            keys.start += 4;
        }
    }
    for j in keys {
        let kr = &k[j * stride..][..hd];
        let mut acc = [_mm512_setzero_ps(); Q];
        for c in (0..hd).step_by(LANES) {
            let kv = load_f16(&kr[c..]);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(kv, load(&q[i * hd + c..]), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            scores[i * row_len + j] = reduce_add(*a);
        }
    }
}

/// [`kqv`] in tinyBLAS order (`ACCS = 1`) for several queries at once: query `i` has the weights
/// `w[i·row_len..][..lens[i]]` and its output goes to `outs[i]` (`hd` wide). Each value row is
/// widened once for all queries; every output is summed exactly as `kqv::<1>` sums it.
/// `acc` is scratch space; `hd` must be a multiple of 16, and there are at most
/// [`MAX_TILE_Q`] queries.
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
    lens: &[usize],
    outs: &[*mut f32],
    hd: usize,
    acc: &mut Vec<f32>,
) {
    assert!(hd.is_multiple_of(LANES) && lens.len() == outs.len() && lens.len() <= MAX_TILE_Q);
    let nq = lens.len();
    // Each query's accumulators, padded by two cache lines so that those of different queries
    // do not sit a multiple of 4 KiB apart (loads would wait on unrelated stores).
    let per_q = LANES * hd + 2 * LANES;
    acc.clear();
    acc.resize(nq * per_q, 0.0);
    let mut padded = [0usize; MAX_TILE_Q];
    padded[..nq].copy_from_slice(lens);
    // Columns in blocks of at most 4 vectors, so that the accumulators of every query stay in
    // registers.
    let mut c0 = 0;
    while c0 < hd {
        let nv = ((hd - c0) / LANES).min(4);
        let acc = &mut acc[..];
        match nv {
            4 => kqv_block::<4>(v, stride, w, row_len, &padded, nq, c0, hd, per_q, acc),
            3 => kqv_block::<3>(v, stride, w, row_len, &padded, nq, c0, hd, per_q, acc),
            2 => kqv_block::<2>(v, stride, w, row_len, &padded, nq, c0, hd, per_q, acc),
            _ => kqv_block::<1>(v, stride, w, row_len, &padded, nq, c0, hd, per_q, acc),
        }
        c0 += nv * LANES;
    }
    for (i, &o) in outs.iter().enumerate() {
        // SAFETY: the caller guarantees `o` is `hd` floats this call alone accesses.
        let o = unsafe { std::slice::from_raw_parts_mut(o, hd) };
        reduce_lanes::<1>(&acc[i * per_q..][..LANES * hd], o);
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

/// Columns `c0..c0 + 16·NV` of [`kqv_tile`]: for each lane `l`, the positions `j ≡ l (mod 16)`
/// are added in order into accumulators held in registers (one per query and vector), then
/// stored to `acc[i·per_q + l·hd + c0..]`. A zero weight leaves its accumulator untouched (a
/// masked fused multiply-add), as the one-query code skips it.
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
fn kqv_block<const NV: usize>(
    v: &[f16],
    stride: usize,
    w: &[f32],
    row_len: usize,
    lens: &[usize; MAX_TILE_Q],
    nq: usize,
    c0: usize,
    hd: usize,
    per_q: usize,
    acc: &mut [f32],
) {
    let n_keys = lens.iter().copied().max().unwrap_or(0);
    for l in 0..LANES.min(n_keys) {
        let mut a = [[_mm512_setzero_ps(); NV]; MAX_TILE_Q];
        for j in (l..n_keys).step_by(LANES) {
            let mut wv = [_mm512_setzero_ps(); MAX_TILE_Q];
            let mut mask: [__mmask16; MAX_TILE_Q] = [0; MAX_TILE_Q];
            let mut any = false;
            for i in 0..MAX_TILE_Q {
                let wj = if j < lens[i] { w[i * row_len + j] } else { 0.0 };
                if wj != 0.0 {
                    mask[i] = 0xffff;
                    any = true;
                }
                wv[i] = _mm512_set1_ps(wj);
            }
            if !any {
                continue; // adds exactly zero for every query
            }
            let row = &v[j * stride + c0..][..NV * LANES];
            for c in 0..NV {
                let x = load_f16(&row[c * LANES..]);
                for i in 0..MAX_TILE_Q {
                    a[i][c] = _mm512_mask3_fmadd_ps(x, wv[i], a[i][c], mask[i]);
                }
            }
        }
        for (i, a) in a.iter().enumerate().take(nq) {
            for (c, a) in a.iter().enumerate() {
                store(&mut acc[i * per_q + l * hd + c0 + c * LANES..], *a);
            }
        }
    }
}
