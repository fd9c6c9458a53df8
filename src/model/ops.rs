//! Element-wise and row-wise operations of the forward pass, each computed the way ggml's CPU
//! backend computes it (accumulation precision and operation order), so activations stay within
//! float noise of llama.cpp's.

use super::config::{Rope, RopeKind};
use super::vmath;
use crate::kernels::matmul::Parallel;
use half::f16;
use std::sync::{Mutex, OnceLock};

/// `y = x / sqrt(mean(x²) + eps) * w` — ggml `rms_norm` (sum in f64) followed by `mul`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    debug_assert!(x.len() == w.len() && y.len() == x.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = (x * scale) * w;
    }
}

/// In-place [`rms_norm`] of each `w.len()`-wide chunk of `x` (per-head q/k norms).
pub fn rms_norm_chunks(x: &mut [f32], w: &[f32], eps: f32) {
    let mut tmp = vec![0f32; w.len()];
    for chunk in x.chunks_exact_mut(w.len()) {
        rms_norm(chunk, w, eps, &mut tmp);
        chunk.copy_from_slice(&tmp);
    }
}

/// The cos/sin table of one position, as ggml's `ggml_rope_cache_init` builds it: theta is
/// advanced by repeated multiplication in f32, not recomputed with `powf` per dimension.
pub fn rope_cache(rope: &Rope, pos: usize, freq_factors: Option<&[f32]>, cache: &mut Vec<f32>) {
    cache.clear();
    let theta_scale = rope.freq_base.powf(-2.0 / rope.n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..rope.n_rot / 2 {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = rope.freq_scale * (theta / ff);
        cache.push(t.cos());
        cache.push(t.sin());
        theta *= theta_scale;
    }
}

/// The [`rope_cache`] tables of a run of positions, kept for the parameters of the last few
/// layers: within a forward pass, layers that share their RoPE parameters (all of llama's; the
/// local and the global ones of gemma3) build them once instead of once per layer, as ggml
/// builds them per `rope` node. Every value is [`rope_cache`]'s, so results do not change.
#[derive(Default)]
pub struct RopeTables {
    entries: Vec<RopeEntry>,
}

struct RopeEntry {
    rope: Rope,
    freq_factors: Option<Vec<f32>>,
    positions: std::ops::Range<usize>,
    table: Vec<f32>, // (positions, n_rot) cos/sin pairs
}

/// Tables kept at once (gemma3 alternates two parameter sets).
const ROPE_ENTRIES: usize = 4;

impl RopeTables {
    /// The cos/sin tables of `positions` for `rope` and `freq_factors`, (positions, n_rot):
    /// [`rope_cache`] of each position, computed now or kept from an earlier call.
    pub fn get(
        &mut self,
        rope: &Rope,
        positions: std::ops::Range<usize>,
        freq_factors: Option<&[f32]>,
    ) -> &[f32] {
        let found = self.entries.iter().position(|e| {
            e.rope == *rope && e.positions == positions && e.freq_factors.as_deref() == freq_factors
        });
        let i = match found {
            Some(i) => i,
            None => {
                if self.entries.len() == ROPE_ENTRIES {
                    self.entries.remove(0);
                }
                let mut table = Vec::with_capacity(positions.len() * rope.n_rot);
                let mut one = Vec::with_capacity(rope.n_rot);
                for pos in positions.clone() {
                    rope_cache(rope, pos, freq_factors, &mut one);
                    table.extend_from_slice(&one);
                }
                self.entries.push(RopeEntry {
                    rope: *rope,
                    freq_factors: freq_factors.map(<[f32]>::to_vec),
                    positions,
                    table,
                });
                self.entries.len() - 1
            }
        };
        &self.entries[i].table
    }
}

vmath::with_fma! {
    /// Rotates each `head_dim`-wide head of `x` by the angles in `cache` (from [`rope_cache`]) —
    /// ggml's `rotate_pairs` as GCC compiles it (`-ffp-contract=fast`): the first product of each
    /// line fused with the rounded second, `x0·cos − x1·sin` = `fma(x0, cos, −(x1·sin))` and
    /// `x0·sin + x1·cos` = `fma(x0, sin, x1·cos)`.
    pub fn rope_apply(kind: RopeKind, n_rot: usize, head_dim: usize, cache: &[f32], x: &mut [f32]) {
        let (stride, offset) = match kind {
            RopeKind::Norm => (2, 1),
            RopeKind::Neox => (1, n_rot / 2),
        };
        for head in x.chunks_exact_mut(head_dim) {
            for i in 0..n_rot / 2 {
                let (c, s) = (cache[2 * i], cache[2 * i + 1]);
                let (a, b) = (stride * i, stride * i + offset);
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0.mul_add(c, -(x1 * s));
                head[b] = x0.mul_add(s, x1 * c);
            }
        }
    }
}

/// `x = softmax(x)` in place — ggml `soft_max` on AVX-512: the max, then
/// [`vmath::soft_max_row`] (`ggml_v_expf` in groups of 16, sum in f64), then every element
/// scaled by `1/sum` rounded to f32.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = vmath::soft_max_row(x, max);
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Elements from which a gated activation is split across the threads of `par` (below, waking
/// them costs more than the work: decode does one row).
const PAR_GATE_MIN: usize = 16 * 1024;

/// `f(gate_rows, up_rows)` over runs of whole rows of `row` elements, shared among the threads
/// of `par` for large batches (ggml splits its `swiglu` / `geglu` rows among its threads too).
/// Each run is cut at row boundaries, so the bytes are those of one call over everything when
/// `f` works row by row or element by element.
pub fn par_rows(
    par: &(impl Parallel + ?Sized),
    gate: &mut [f32],
    up: &[f32],
    row: usize,
    f: &(dyn Fn(&mut [f32], &[f32]) + Sync),
) {
    let threads = par.threads();
    if threads <= 1 || gate.len() < PAR_GATE_MIN || row == 0 {
        return f(gate, up);
    }
    let rows = gate.len().div_ceil(row);
    // A few runs per thread, so a thread that starts late still finds work.
    let run = rows.div_ceil(4 * threads).max(1) * row;
    let runs: Vec<Mutex<(&mut [f32], &[f32])>> = gate
        .chunks_mut(run)
        .zip(up.chunks(run))
        .map(Mutex::new)
        .collect();
    par.run(runs.len(), &|i| {
        // Each index is handed out once, so the lock is never contended.
        let mut guard = runs[i].lock().unwrap_or_else(|e| e.into_inner());
        let (g, u) = &mut *guard;
        f(g, u);
    });
}

/// `f(first_row, rows)` over runs of whole rows of `row` elements of `x`, shared among the
/// threads of `par` for large batches as [`par_rows`] shares them (`first_row` is the index of
/// the run's first row). Each row is computed as one call over everything would compute it.
pub fn par_rows_mut(
    par: &(impl Parallel + ?Sized),
    x: &mut [f32],
    row: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let threads = par.threads();
    if threads <= 1 || x.len() < PAR_GATE_MIN || row == 0 {
        return f(0, x);
    }
    let rows = x.len().div_ceil(row);
    let run_rows = rows.div_ceil(4 * threads).max(1);
    let runs: Vec<Mutex<&mut [f32]>> = x.chunks_mut(run_rows * row).map(Mutex::new).collect();
    par.run(runs.len(), &|i| {
        // Each index is handed out once, so the lock is never contended.
        let mut guard = runs[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i * run_rows, &mut guard);
    });
}

/// `gate = silu(gate) * up` — ggml `swiglu` ([`vmath::swiglu_row`]), row by row: the vector
/// body restarts at each row of `row` elements.
pub fn swiglu(gate: &mut [f32], up: &[f32], row: usize) {
    for (g, u) in gate.chunks_mut(row).zip(up.chunks(row)) {
        vmath::swiglu_row(g, u);
    }
}

/// `gate = gelu(gate) * up` — ggml `geglu` with `GGML_GELU_FP16`: GELU (tanh form) looked up
/// in a table indexed by the f16 rounding of the input, saturating outside ±10.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has AVX-512 F and F16C (checked just above).
        return unsafe { geglu_avx512(gate, up) };
    }
    geglu_scalar(gate, up)
}

/// [`geglu`] one element at a time (CPUs without AVX-512, the vector tail, the tests' reference).
fn geglu_scalar(gate: &mut [f32], up: &[f32]) {
    let table = gelu_f16_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[f16::from_f32(x).to_bits() as usize].to_f32() * u
        };
    }
}

/// [`geglu`] 16 elements at a time: the f16 rounding by `vcvtps2ph` (nearest even, as `half`
/// and ggml's F16C conversion), the table read by a gather from its f32 copy, and the two
/// saturations as blends — per element the operations of [`geglu_scalar`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
fn geglu_avx512(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let table = gelu_f32_table();
    let n = gate.len().min(up.len());
    let whole = n / 16 * 16;
    let (lo, hi) = (_mm512_set1_ps(-10.0), _mm512_set1_ps(10.0));
    for (g, u) in gate[..whole]
        .chunks_exact_mut(16)
        .zip(up[..whole].chunks_exact(16))
    {
        // SAFETY: `g` and `u` are 16 floats each (unaligned loads and stores); the gather reads
        // `table[i]` for f16 bit patterns `i` < 65536 = `table.len()`.
        unsafe {
            let x = _mm512_loadu_ps(g.as_ptr());
            let u = _mm512_loadu_ps(u.as_ptr());
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let t = _mm512_i32gather_ps::<4>(_mm512_cvtepu16_epi32(h), table.as_ptr());
            let r = _mm512_mul_ps(t, u);
            let r = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, hi),
                r,
                _mm512_mul_ps(x, u),
            );
            let r = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, lo),
                r,
                _mm512_setzero_ps(),
            );
            _mm512_storeu_ps(g.as_mut_ptr(), r);
        }
    }
    geglu_scalar(&mut gate[whole..n], &up[whole..n]);
}

/// The GELU table widened to f32 (exactly: every f16 is an f32), for gathers.
#[cfg(target_arch = "x86_64")]
fn gelu_f32_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| gelu_f16_table().iter().map(|h| h.to_f32()).collect())
}

/// ggml's `ggml_gelu_f32`: `0.5x(1 + tanh(sqrt(2/π)·x·(1 + 0.044715x²)))`, as GCC compiles it
/// (`-ffp-contract=fast`): `1 + (0.044715x)·x` is one fused multiply-add.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

fn gelu_f16_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

/// `y += x`.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_masks() {
        let mut x = [1.0, 2.0, f32::NEG_INFINITY, 3.0];
        softmax(&mut x);
        assert_eq!(x[2], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > x[1] && x[1] > x[0]);
    }

    /// Every table equals `rope_cache` position by position, for whichever parameters were
    /// asked last, also after other parameter sets (two rope settings alternating, as gemma3's
    /// local and global layers do; frequency factors; more settings than entries).
    #[test]
    fn rope_tables_equal_rope_cache() {
        let base = Rope {
            kind: RopeKind::Norm,
            n_rot: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let other = Rope {
            freq_base: 1e6,
            ..base
        };
        let ff = [1.0f32, 2.0, 4.0, 8.0];
        // (parameters, positions, frequency factors)
        type Ask<'a> = (Rope, std::ops::Range<usize>, Option<&'a [f32]>);
        let asks: [Ask; 9] = [
            (base, 0..5, None),
            (base, 0..5, None),
            (other, 0..5, None),
            (base, 0..5, None),
            (base, 0..5, Some(&ff)),
            (base, 5..6, None),
            (Rope { n_rot: 4, ..base }, 5..6, None),
            (
                Rope {
                    freq_scale: 0.5,
                    ..other
                },
                3..9,
                None,
            ),
            (base, 0..5, None),
        ];
        let mut tables = RopeTables::default();
        let mut one = Vec::new();
        for (rope, positions, ff) in asks {
            let got = tables.get(&rope, positions.clone(), ff).to_vec();
            let mut want = Vec::new();
            for pos in positions.clone() {
                rope_cache(&rope, pos, ff, &mut one);
                want.extend_from_slice(&one);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{rope:?} {positions:?} {ff:?}");
        }
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        let rope = Rope {
            kind: RopeKind::Neox,
            n_rot: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let mut cache = Vec::new();
        let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        rope_cache(&rope, 0, None, &mut cache);
        let mut y = x.clone();
        rope_apply(rope.kind, 8, 8, &cache, &mut y);
        assert_eq!(x, y);
        rope_cache(&rope, 17, None, &mut cache);
        for kind in [RopeKind::Norm, RopeKind::Neox] {
            let mut y = x.clone();
            rope_apply(kind, 8, 8, &cache, &mut y);
            let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((n(&x) - n(&y)).abs() < 1e-3);
            assert_ne!(x, y);
        }
    }

    #[test]
    fn geglu_vector_equals_scalar_bit_for_bit() {
        let mut seed = 0x1234_5678u32;
        let mut next = || crate::testing::xorshift(&mut seed);
        let mut x: Vec<f32> = (0..4103)
            .map(|i| match i % 5 {
                0 => next() * 40.0,
                1 => next() * 1e-6,
                2 => next() * 2e5,
                _ => next() * 8.0,
            })
            .collect();
        // The saturation edges, their f16 neighbours, signed zeros and infinities.
        let edges = [
            -10.0, 10.0, -9.999, 9.999, -10.001, 10.001, 0.0, -0.0, 65504.0, 7e4,
        ];
        x[..edges.len()].copy_from_slice(&edges);
        x[20] = f32::INFINITY;
        x[21] = f32::NEG_INFINITY;
        let up: Vec<f32> = (0..x.len()).map(|_| next() * 6.0).collect();
        for len in [0usize, 7, 16, 33, 2048, 4103] {
            let (mut a, mut b) = (x[..len].to_vec(), x[..len].to_vec());
            geglu(&mut a, &up[..len]);
            geglu_scalar(&mut b, &up[..len]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "len {len}");
        }
        // A NaN input stays NaN.
        let mut g = vec![f32::NAN; 16];
        geglu(&mut g, &[1.0; 16]);
        assert!(g.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn geglu_matches_gelu_within_f16_rounding() {
        for &x in &[-12.0f32, -3.0, -0.5, 0.0, 0.25, 1.0, 4.0, 11.0] {
            let mut g = [x];
            geglu(&mut g, &[2.0]);
            let want = if x >= 10.0 {
                x * 2.0
            } else if x <= -10.0 {
                0.0
            } else {
                gelu_f32(x) * 2.0
            };
            assert!(
                (g[0] - want).abs() <= 2e-3 * want.abs().max(1.0),
                "x={x}: {} vs {want}",
                g[0]
            );
        }
    }

    /// Splitting swiglu / geglu over threads gives the bytes of one call over the whole batch.
    #[test]
    fn par_rows_equals_one_call() {
        let pool = crate::threadpool::ThreadPool::new(2);
        let mut seed = 0x5151_7a7au32;
        for (row, rows) in [(576usize, 40usize), (1536, 13), (100, 300), (7, 1)] {
            let len = row * rows;
            let mut rnd = || crate::testing::xorshift(&mut seed) * 24.0;
            let gate: Vec<f32> = (0..len).map(|_| rnd()).collect();
            let up: Vec<f32> = (0..len).map(|_| rnd()).collect();
            let (mut want, mut got) = (gate.clone(), gate.clone());
            geglu(&mut want, &up);
            par_rows(&pool, &mut got, &up, row, &geglu);
            assert_eq!(
                bytemuck::cast_slice::<f32, u32>(&got),
                bytemuck::cast_slice::<f32, u32>(&want)
            );
            let (mut want, mut got) = (gate.clone(), gate);
            swiglu(&mut want, &up, row);
            par_rows(&pool, &mut got, &up, row, &|g, u| swiglu(g, u, row));
            assert_eq!(
                bytemuck::cast_slice::<f32, u32>(&got),
                bytemuck::cast_slice::<f32, u32>(&want)
            );
        }
    }
}
