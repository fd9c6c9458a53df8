//! The vectorised math of ggml-cpu's x86 AVX-512 build, lane by lane: `ggml_v_expf` (a
//! polynomial, not libm's `expf`), and the row functions built on it (`ggml_vec_soft_max_f32`,
//! `ggml_vec_swiglu_f32`), including which elements go through the vector body (whole groups
//! of 16 from the row start) and which through the scalar tail (libm `expf`). Each lane's
//! arithmetic is independent, so a scalar loop with fused multiply-adds reproduces the vector
//! code bit for bit; the loops are compiled twice, with and without the `fma` target feature,
//! so the fused operations are instructions where the CPU has them.

/// Elements per AVX-512 vector.
pub const LANES: usize = 16;

/// `f32::from_bits` of ggml's hexadecimal constants.
mod c {
    pub const SHIFTER: f32 = f32::from_bits(0x4b40_0000); // 0x1.8p23
    pub const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
    pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
    pub const P0: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    pub const P1: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    pub const P2: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    pub const P3: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    pub const P4: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
}

/// One lane of ggml's AVX-512 `ggml_v_expf`: `n = round(x·log2 e)`, `b = x − n·ln 2` in two
/// parts, a degree-5 polynomial `j`, and `_mm512_scalef_ps(j, n)`; |n| > 192 saturates to 0 or ∞.
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let z = x.mul_add(c::LOG2E, c::SHIFTER);
    let n = z - c::SHIFTER;
    let b = (-n).mul_add(c::LN2_LO, (-n).mul_add(c::LN2_HI, x));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = c::P0
        .mul_add(b, c::P1)
        .mul_add(u, c::P2.mul_add(b, c::P3))
        .mul_add(u, c::P4.mul_add(b, 1.0));
    // scalef: j · 2^n rounded once (the f64 product is exact; 2^n for |n| <= 192 is a normal
    // f64, built from its exponent bits rather than with `powi`, which is a libcall).
    (j as f64 * pow2(n as i32)) as f32
}

/// `2^n` as an f64, exactly, for `-1022 <= n <= 1023`.
#[inline(always)]
fn pow2(n: i32) -> f64 {
    f64::from_bits(((n + 1023) as u64) << 52)
}

/// GCC's `_mm512_reduce_add_ps`: halves added, then quarters, then pairs.
#[inline(always)]
pub fn reduce_add_16(v: &[f32; LANES]) -> f32 {
    let mut h = [0f32; 8];
    for i in 0..8 {
        h[i] = v[i] + v[i + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Compiles `$body` as two functions (with and without the `fma` target feature) behind one
/// safe entry point that picks the first when the CPU has FMA.
macro_rules! with_fma {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "fma")]
                fn fast($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has FMA (checked just above).
                    return unsafe { fast($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use with_fma;

/// `y = exp(x - max)` for each element, returning the sum in f64 — ggml's
/// `ggml_vec_soft_max_f32` on AVX-512: whole groups of 16 through [`v_expf`], each group
/// reduced in f32 ([`reduce_add_16`]) before joining the f64 sum; the tail through libm.
pub fn soft_max_row(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { x86::soft_max_row(x, max) };
    }
    soft_max_row_lanes(x, max)
}

with_fma! {
    /// [`soft_max_row`] one lane at a time (CPUs without AVX-512, and the tests' reference).
    pub fn soft_max_row_lanes(x: &mut [f32], max: f32) -> f64 {
        let mut sum = 0f64;
        let mut groups = x.chunks_exact_mut(LANES);
        for g in &mut groups {
            let mut v = [0f32; LANES];
            for (v, x) in v.iter_mut().zip(g.iter_mut()) {
                *v = v_expf(*x - max);
                *x = *v;
            }
            sum += reduce_add_16(&v) as f64;
        }
        soft_max_tail(groups.into_remainder(), max, sum)
    }
}

/// The elements past the last whole group of [`soft_max_row`], through libm's `expf`.
fn soft_max_tail(x: &mut [f32], max: f32, mut sum: f64) -> f64 {
    for x in x {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    sum
}

/// `gate = silu(gate) * up` — ggml's `ggml_vec_swiglu_f32` on AVX-512: groups of 16 as
/// `x / (1 + v_expf(0 - x)) * g`, the tail with libm's `expf`.
pub fn swiglu_row(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { x86::swiglu_row(gate, up) };
    }
    swiglu_row_lanes(gate, up)
}

with_fma! {
    /// [`swiglu_row`] one lane at a time (CPUs without AVX-512, and the tests' reference).
    pub fn swiglu_row_lanes(gate: &mut [f32], up: &[f32]) {
        let whole = gate.len() / LANES * LANES;
        for (g, &u) in gate[..whole].iter_mut().zip(&up[..whole]) {
            *g = *g / (1.0 + v_expf(0.0 - *g)) * u;
        }
        swiglu_tail(&mut gate[whole..], &up[whole..]);
    }
}

/// The elements past the last whole group of [`swiglu_row`], through libm's `expf`.
fn swiglu_tail(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// The AVX-512 bodies of the row functions: ggml's intrinsics, 16 lanes per instruction. Each
/// lane computes exactly what [`v_expf`] computes (tested bit for bit below).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{c, reduce_add_16, LANES};
    use core::arch::x86_64::*;

    /// ggml's AVX-512 `ggml_v_expf`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn v_expf(x: __m512) -> __m512 {
        let set = _mm512_set1_ps;
        let r = set(c::SHIFTER);
        let z = _mm512_fmadd_ps(x, set(c::LOG2E), r);
        let n = _mm512_sub_ps(z, r);
        let b = _mm512_fnmadd_ps(n, set(c::LN2_LO), _mm512_fnmadd_ps(n, set(c::LN2_HI), x));
        let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), set(192.0));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(set(c::P0), b, set(c::P1)),
                u,
                _mm512_fmadd_ps(set(c::P2), b, set(c::P3)),
            ),
            u,
            _mm512_fmadd_ps(set(c::P4), b, set(1.0)),
        );
        let res = _mm512_scalef_ps(j, n);
        if d == 0 {
            return res;
        }
        let zero = _mm512_setzero_ps();
        let alt = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero),
            set(f32::INFINITY),
            zero,
        );
        _mm512_mask_blend_ps(d, res, alt)
    }

    /// [`super::soft_max_row`].
    #[target_feature(enable = "avx512f")]
    pub fn soft_max_row(x: &mut [f32], max: f32) -> f64 {
        let mut sum = 0f64;
        let mut groups = x.chunks_exact_mut(LANES);
        for g in &mut groups {
            let g: &mut [f32; LANES] = g.try_into().unwrap();
            // SAFETY: `g` is 16 floats; the loads and stores are unaligned.
            let v = unsafe { _mm512_loadu_ps(g.as_ptr()) };
            let e = v_expf(_mm512_sub_ps(v, _mm512_set1_ps(max)));
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(g.as_mut_ptr(), e) };
            sum += reduce_add_16(g) as f64;
        }
        super::soft_max_tail(groups.into_remainder(), max, sum)
    }

    /// [`super::swiglu_row`].
    #[target_feature(enable = "avx512f")]
    pub fn swiglu_row(gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        let whole = n / LANES * LANES;
        let one = _mm512_set1_ps(1.0);
        for (g, u) in gate[..whole]
            .chunks_exact_mut(LANES)
            .zip(up[..whole].chunks_exact(LANES))
        {
            // SAFETY: `g` and `u` are 16 floats each; the loads and stores are unaligned.
            unsafe {
                let x = _mm512_loadu_ps(g.as_ptr());
                let e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let silu = _mm512_div_ps(x, _mm512_add_ps(one, e));
                _mm512_storeu_ps(
                    g.as_mut_ptr(),
                    _mm512_mul_ps(silu, _mm512_loadu_ps(u.as_ptr())),
                );
            }
        }
        super::swiglu_tail(&mut gate[whole..n], &up[whole..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_exp_and_saturates() {
        for &x in &[-80.0f32, -10.0, -1.0, -0.1, 0.0, 0.3, 1.0, 5.0, 60.0] {
            let (got, want) = (v_expf(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want,
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(v_expf(0.0), 1.0);
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-200.0), 0.0);
        assert_eq!(v_expf(200.0), f32::INFINITY);
    }

    #[test]
    fn soft_max_row_sums_groups_and_tail() {
        let mut x: Vec<f32> = (0..21).map(|i| i as f32 * 0.1).collect();
        let sum = soft_max_row(&mut x, 2.0);
        let want: f64 = (0..21).map(|i| ((i as f32 * 0.1 - 2.0).exp()) as f64).sum();
        assert!((sum - want).abs() < 1e-5);
        assert_eq!(x[20], (0.0f32).exp());
    }

    /// The AVX-512 row functions compute the lane-by-lane ones bit for bit, over inputs that
    /// reach every branch of `v_expf` (saturation both ways, NaN, subnormal results).
    #[test]
    fn avx512_rows_equal_lanes_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut seed = 0x9e37_79b9u32;
            let mut x: Vec<f32> = (0..4099)
                .map(|i| {
                    let u = crate::testing::xorshift(&mut seed);
                    match i % 7 {
                        0 => u * 400.0,
                        1 => u * 30.0,
                        2 => -87.0 - u * 40.0,
                        _ => u * 6.0,
                    }
                })
                .collect();
            x[5] = f32::NAN;
            x[17] = f32::INFINITY;
            x[18] = f32::NEG_INFINITY;
            let up: Vec<f32> = x.iter().map(|v| v.sin() * 3.0).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for len in [0usize, 15, 16, 31, 1536, 4099] {
                let (mut a, mut b) = (x[..len].to_vec(), x[..len].to_vec());
                // SAFETY: the CPU has AVX-512 F (checked above).
                unsafe { x86::swiglu_row(&mut a, &up[..len]) };
                swiglu_row_lanes(&mut b, &up[..len]);
                assert_eq!(bits(&a), bits(&b), "swiglu {len}");
                let (mut a, mut b) = (x[..len].to_vec(), x[..len].to_vec());
                a.iter_mut()
                    .chain(b.iter_mut())
                    .for_each(|v| *v = v.clamp(-300.0, 0.0));
                // SAFETY: as above.
                let sa = unsafe { x86::soft_max_row(&mut a, 0.0) };
                let sb = soft_max_row_lanes(&mut b, 0.0);
                assert_eq!(bits(&a), bits(&b), "soft_max {len}");
                assert_eq!(sa.to_bits(), sb.to_bits(), "soft_max sum {len}");
            }
        }
    }
}
