//! One ggml block after its parameters are fitted, seen as a grid of representable values per
//! element: the stored scale/min/sub-scales are decoded exactly as ggml's `dequantize_row_*`
//! decodes them, so `Grid::value(code)` is bit for bit the float the file will hold. GPTQ picks
//! a code per element against this grid, then [`pack_codes`] writes those codes back into the
//! block next to the untouched parameters.
//!
//! Codes are the stored levels (Q4_0: 0..=15, Q3_K: 0..=7 with the high bit in `hmask`, Q8_0:
//! the signed byte, TQ*: the trit 0..=2, Q1_0: the sign bit, Q2_0: the level 0..=3).

use ggml_compat::blocks::{
    BlockIQ4NL, BlockQ1_0, BlockQ2K, BlockQ2_0, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockTQ1_0, BlockTQ2_0,
};
use ggml_compat::quant::float::fp16_to_fp32;
use ggml_compat::quant::tables::KVALUES_IQ4NL;
use ggml_compat::GgmlType;

/// How a code becomes a value; each arm is the expression of the type's `dequantize_row_*`.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// `(q - off) * a` (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K, TQ1_0, TQ2_0, Q2_0).
    Mul,
    /// `q * a + b` (Q4_1, Q5_1).
    MulAdd,
    /// `a * q - b` (Q2_K, Q4_K, Q5_K: sub-block scale and min).
    MulSub,
    /// `a * kvalues_iq4nl[q]` (IQ4_NL).
    Table,
    /// `q ? a : -a` (Q1_0).
    Sign,
}

/// The values one element can take once its block's parameters are fixed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    a: f32,
    b: f32,
    off: i32,
    lo: i32,
    hi: i32,
    rule: Rule,
}

const EMPTY: Grid = Grid {
    a: 0.0,
    b: 0.0,
    off: 0,
    lo: 0,
    hi: 0,
    rule: Rule::Mul,
};

impl Grid {
    fn mul(a: f32, off: i32, lo: i32, hi: i32) -> Self {
        Grid {
            a,
            off,
            lo,
            hi,
            ..EMPTY
        }
    }

    fn with(rule: Rule, a: f32, b: f32, hi: i32) -> Self {
        Grid {
            a,
            b,
            hi,
            rule,
            ..EMPTY
        }
    }

    /// The dequantized value of code `q`, computed as ggml's `dequantize_row_*` computes it.
    #[inline]
    pub(crate) fn value(&self, q: i32) -> f32 {
        match self.rule {
            Rule::Mul => (q - self.off) as f32 * self.a,
            Rule::MulAdd => q as f32 * self.a + self.b,
            Rule::MulSub => self.a * q as f32 - self.b,
            Rule::Table => self.a * KVALUES_IQ4NL[q as usize] as f32,
            Rule::Sign => {
                if q != 0 {
                    self.a
                } else {
                    -self.a
                }
            }
        }
    }

    /// The code whose value is nearest to `x` (the lower code on a tie), and that value.
    #[inline]
    pub(crate) fn nearest(&self, x: f32) -> (i32, f32) {
        let (from, to) = match self.rule {
            Rule::Table | Rule::Sign => (self.lo, self.hi),
            _ => {
                let t = match self.rule {
                    Rule::Mul => x / self.a + self.off as f32,
                    Rule::MulAdd => (x - self.b) / self.a,
                    _ => (x + self.b) / self.a,
                };
                // NaN (a zero scale) casts to 0; the clamp keeps the guess in range.
                let g = (t.round() as i32).clamp(self.lo, self.hi);
                ((g - 1).max(self.lo), (g + 1).min(self.hi))
            }
        };
        let mut best = (from, self.value(from));
        let mut best_err = (x - best.1).abs();
        for q in from + 1..=to {
            let v = self.value(q);
            let err = (x - v).abs();
            if err < best_err {
                best = (q, v);
                best_err = err;
            }
        }
        best
    }
}

/// The grids of one fitted block: element `j` uses `grids[j / group]`.
pub(crate) struct Fitted {
    grids: [Grid; 16],
    group: usize,
}

impl Fitted {
    #[inline]
    pub(crate) fn grid(&self, j: usize) -> &Grid {
        &self.grids[j / self.group]
    }
}

/// Whether GPTQ can write `ty` (it has a grid and a packer here).
pub(crate) fn supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | TQ1_0
            | TQ2_0
            | Q1_0
            | Q2_0
    )
}

fn read<B: bytemuck::Pod>(block: &[u8]) -> B {
    bytemuck::pod_read_unaligned(block)
}

fn write<B: bytemuck::Pod>(block: &mut [u8], b: &B) {
    block.copy_from_slice(bytemuck::bytes_of(b));
}

fn one(grid: Grid, group: usize) -> Fitted {
    let mut grids = [EMPTY; 16];
    grids[0] = grid;
    Fitted { grids, group }
}

fn per_group(group: usize, f: impl Fn(usize) -> Grid) -> Fitted {
    Fitted {
        grids: std::array::from_fn(f),
        group,
    }
}

/// Q3_K's 6-bit signed scale of sub-block `j` (ggml's unpacking in `dequantize_row_q3_K`).
fn q3k_scale(s: &[u8; 12], j: usize) -> i8 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Q4_K / Q5_K's 6-bit scale and min of sub-block `j` (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes the parameters of one block of `ty` (`block.len() == ty.type_size()`), as stored.
/// `ty` must be [`supported`].
pub(crate) fn fit_grids(ty: GgmlType, block: &[u8]) -> Fitted {
    use GgmlType::*;
    match ty {
        Q4_0 => one(
            Grid::mul(fp16_to_fp32(read::<BlockQ4_0>(block).d), 8, 0, 15),
            32,
        ),
        Q5_0 => one(
            Grid::mul(fp16_to_fp32(read::<BlockQ5_0>(block).d), 16, 0, 31),
            32,
        ),
        Q8_0 => one(
            Grid::mul(fp16_to_fp32(read::<BlockQ8_0>(block).d), 0, -127, 127),
            32,
        ),
        Q4_1 => {
            let b: BlockQ4_1 = read(block);
            let (d, m) = (fp16_to_fp32(b.d), fp16_to_fp32(b.m));
            one(Grid::with(Rule::MulAdd, d, m, 15), 32)
        }
        Q5_1 => {
            let b: BlockQ5_1 = read(block);
            let (d, m) = (fp16_to_fp32(b.d), fp16_to_fp32(b.m));
            one(Grid::with(Rule::MulAdd, d, m, 31), 32)
        }
        IQ4_NL => {
            let d = fp16_to_fp32(read::<BlockIQ4NL>(block).d);
            one(Grid::with(Rule::Table, d, 0.0, 15), 32)
        }
        TQ1_0 => one(
            Grid::mul(read::<BlockTQ1_0>(block).d.to_f32(), 1, 0, 2),
            256,
        ),
        TQ2_0 => one(
            Grid::mul(read::<BlockTQ2_0>(block).d.to_f32(), 1, 0, 2),
            256,
        ),
        Q1_0 => {
            let d = fp16_to_fp32(read::<BlockQ1_0>(block).d);
            one(Grid::with(Rule::Sign, d, 0.0, 1), 128)
        }
        Q2_0 => one(
            Grid::mul(fp16_to_fp32(read::<BlockQ2_0>(block).d), 1, 0, 3),
            64,
        ),
        Q2_K => {
            let b: BlockQ2K = read(block);
            let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
            per_group(16, |g| {
                let sc = b.scales[g];
                let dl = d * f32::from(sc & 0xF);
                let ml = dmin * f32::from(sc >> 4);
                Grid::with(Rule::MulSub, dl, ml, 3)
            })
        }
        Q3_K => {
            let b: BlockQ3K = read(block);
            let d = b.d.to_f32();
            per_group(16, |g| {
                Grid::mul(d * f32::from(q3k_scale(&b.scales, g)), 4, 0, 7)
            })
        }
        Q4_K | Q5_K => {
            let (d, dmin, scales, hi) = if ty == Q4_K {
                let b: BlockQ4K = read(block);
                (b.d, b.dmin, b.scales, 15)
            } else {
                let b: BlockQ5K = read(block);
                (b.d, b.dmin, b.scales, 31)
            };
            let (d, dmin) = (d.to_f32(), dmin.to_f32());
            let mut f = per_group(32, |_| EMPTY);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &scales);
                f.grids[j] = Grid::with(Rule::MulSub, d * f32::from(sc), dmin * f32::from(m), hi);
            }
            f
        }
        Q6_K => {
            let b: BlockQ6K = read(block);
            let d = b.d.to_f32();
            per_group(16, |g| Grid::mul(d * f32::from(b.scales[g]), 32, 0, 63))
        }
        _ => unreachable!("fit_grids called for unsupported {ty}"),
    }
}

/// Base-3 digits (first most significant) as TQ1_0's fixed-point byte `ceil(n * 256 / 243)`.
fn pack_trits(trits: impl Iterator<Item = u8>) -> u8 {
    let n = trits.fold(0u8, |q, t| q * 3 + t);
    (n as u16 * 256).div_ceil(243) as u8
}

/// Nibble pairs `(c[j], c[j + half])` into `qs[j]`, low nibble first (legacy and IQ4_NL layout,
/// and Q4_K/Q5_K per 64-value chunk).
fn pack_nibbles(c: &[u8], qs: &mut [u8]) {
    let half = qs.len();
    for (j, q) in qs.iter_mut().enumerate() {
        *q = (c[j] & 0xF) | ((c[j + half] & 0xF) << 4);
    }
}

/// 2-bit layout of Q2_K / Q3_K / TQ2_0: element `128h + 32k + l` in bits `2k` of `qs[32h + l]`.
fn pack_2bit(c: &[u8], qs: &mut [u8]) {
    for (h, q) in qs.chunks_exact_mut(32).enumerate() {
        for (l, byte) in q.iter_mut().enumerate() {
            *byte = (0..4).fold(0, |acc, k| acc | ((c[128 * h + 32 * k + l] & 3) << (2 * k)));
        }
    }
}

/// Writes the codes `codes` (one per element, in the ranges of [`fit_grids`]) into `block`,
/// keeping its parameters. `ty` must be [`supported`].
pub(crate) fn pack_codes(ty: GgmlType, block: &mut [u8], codes: &[i32]) {
    use GgmlType::*;
    let c: Vec<u8> = codes.iter().map(|&q| q as u8).collect();
    match ty {
        Q4_0 => {
            let mut b: BlockQ4_0 = read(block);
            pack_nibbles(&c, &mut b.qs);
            write(block, &b);
        }
        Q4_1 => {
            let mut b: BlockQ4_1 = read(block);
            pack_nibbles(&c, &mut b.qs);
            write(block, &b);
        }
        IQ4_NL => {
            let mut b: BlockIQ4NL = read(block);
            pack_nibbles(&c, &mut b.qs);
            write(block, &b);
        }
        Q5_0 | Q5_1 => {
            let mut qh = 0u32;
            for (j, &q) in c.iter().enumerate() {
                qh |= u32::from(q >> 4) << j;
            }
            if ty == Q5_0 {
                let mut b: BlockQ5_0 = read(block);
                pack_nibbles(&c, &mut b.qs);
                b.qh = qh.to_le_bytes();
                write(block, &b);
            } else {
                let mut b: BlockQ5_1 = read(block);
                pack_nibbles(&c, &mut b.qs);
                b.qh = qh.to_le_bytes();
                write(block, &b);
            }
        }
        Q8_0 => {
            let mut b: BlockQ8_0 = read(block);
            for (q, &code) in b.qs.iter_mut().zip(codes) {
                *q = code as i8;
            }
            write(block, &b);
        }
        Q2_K => {
            let mut b: BlockQ2K = read(block);
            pack_2bit(&c, &mut b.qs);
            write(block, &b);
        }
        Q3_K => {
            let mut b: BlockQ3K = read(block);
            pack_2bit(&c, &mut b.qs);
            b.hmask = [0; 32];
            for (j, &q) in c.iter().enumerate() {
                b.hmask[j % 32] |= (q >> 2) << (j / 32);
            }
            write(block, &b);
        }
        Q4_K => {
            let mut b: BlockQ4K = read(block);
            for (ch, qs) in b.qs.chunks_exact_mut(32).enumerate() {
                pack_nibbles(&c[64 * ch..64 * ch + 64], qs);
            }
            write(block, &b);
        }
        Q5_K => {
            let mut b: BlockQ5K = read(block);
            b.qh = [0; 32];
            for (ch, qs) in b.qs.chunks_exact_mut(32).enumerate() {
                let cc = &c[64 * ch..64 * ch + 64];
                pack_nibbles(cc, qs);
                for l in 0..32 {
                    b.qh[l] |= ((cc[l] >> 4) << (2 * ch)) | ((cc[l + 32] >> 4) << (2 * ch + 1));
                }
            }
            write(block, &b);
        }
        Q6_K => {
            let mut b: BlockQ6K = read(block);
            for h in 0..2 {
                for l in 0..32 {
                    let q = [0, 1, 2, 3].map(|k| c[128 * h + 32 * k + l]);
                    b.ql[64 * h + l] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
                    b.ql[64 * h + l + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
                    b.qh[32 * h + l] =
                        (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
                }
            }
            write(block, &b);
        }
        TQ2_0 => {
            let mut b: BlockTQ2_0 = read(block);
            pack_2bit(&c, &mut b.qs);
            write(block, &b);
        }
        TQ1_0 => {
            let mut b: BlockTQ1_0 = read(block);
            for m in 0..32 {
                b.qs[m] = pack_trits((0..5).map(|n| c[m + 32 * n]));
            }
            for m in 0..16 {
                b.qs[32 + m] = pack_trits((0..5).map(|n| c[160 + m + 16 * n]));
            }
            for m in 0..4 {
                let four = (0..4).map(|n| c[240 + m + 4 * n]);
                b.qh[m] = pack_trits(four.chain(std::iter::once(0)));
            }
            write(block, &b);
        }
        Q1_0 => {
            let mut b: BlockQ1_0 = read(block);
            b.qs = [0; 16];
            for (j, &q) in c.iter().enumerate() {
                b.qs[j / 8] |= (q & 1) << (j % 8);
            }
            write(block, &b);
        }
        Q2_0 => {
            let mut b: BlockQ2_0 = read(block);
            b.qs = [0; 16];
            for (j, &q) in c.iter().enumerate() {
                b.qs[j / 4] |= (q & 3) << (2 * (j % 4));
            }
            write(block, &b);
        }
        _ => unreachable!("pack_codes called for unsupported {ty}"),
    }
}

/// Stores the single scale `d` of a block of TQ1_0, TQ2_0, Q1_0 or Q2_0 (the formats with one
/// f16 scale and no other parameter), keeping its codes. Returns `false` (and leaves the block
/// alone) for any other type.
pub(crate) fn set_scale(ty: GgmlType, block: &mut [u8], d: half::f16) -> bool {
    use GgmlType::*;
    /// Rewrites the block as a `B` whose scale `d_of` gives.
    fn set<B: bytemuck::Pod>(block: &mut [u8], d: half::f16, d_of: fn(&mut B) -> &mut half::f16) {
        let mut b: B = read(block);
        *d_of(&mut b) = d;
        write(block, &b);
    }
    match ty {
        TQ1_0 => set::<BlockTQ1_0>(block, d, |b| &mut b.d),
        TQ2_0 => set::<BlockTQ2_0>(block, d, |b| &mut b.d),
        Q1_0 => set::<BlockQ1_0>(block, d, |b| &mut b.d),
        Q2_0 => set::<BlockQ2_0>(block, d, |b| &mut b.d),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ggml_compat::quant;

    /// Deterministic pseudo-random numbers (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    const TYPES: [GgmlType; 15] = {
        use GgmlType::*;
        [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, TQ1_0, TQ2_0, Q1_0,
            Q2_0,
        ]
    };

    /// For every type: fit a block with ggml's quantizer (with and without importance weights),
    /// write random codes over the whole range in every position, and check that ggml's
    /// dequantization of the bytes equals `Grid::value` bit for bit, and that `nearest` maps a
    /// grid value back to a code of that same value.
    #[test]
    fn packed_codes_dequantize_to_grid_values() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for ty in TYPES {
            assert!(supported(ty));
            let bs = ty.block_size();
            for trial in 0..40 {
                let scale = [1e-3f32, 0.05, 1.0, 30.0][trial % 4];
                let x: Vec<f32> = (0..bs)
                    .map(|j| {
                        let v = (rng.unit() - 0.4) * scale;
                        if j % 29 == 3 {
                            6.0 * v
                        } else {
                            v
                        }
                    })
                    .collect();
                let imp: Vec<f32> = (0..bs).map(|_| rng.unit() + 0.01).collect();
                let mut block = vec![0u8; ty.type_size()];
                let weights = (trial % 2 == 1).then_some(&imp[..]);
                quant::quantize_row(ty, &x, &mut block, weights).unwrap();
                let fitted = fit_grids(ty, &block);
                let codes: Vec<i32> = (0..bs)
                    .map(|j| {
                        let g = fitted.grid(j);
                        g.lo + (rng.next() % (g.hi - g.lo + 1) as u64) as i32
                    })
                    .collect();
                pack_codes(ty, &mut block, &codes);
                let mut back = vec![0f32; bs];
                quant::dequantize(ty, &block, &mut back).unwrap();
                for j in 0..bs {
                    let g = fitted.grid(j);
                    let want = g.value(codes[j]);
                    assert_eq!(
                        back[j].to_bits(),
                        want.to_bits(),
                        "{ty} trial {trial} element {j} code {}: {} vs {want}",
                        codes[j],
                        back[j]
                    );
                    let (_, v) = g.nearest(want);
                    assert_eq!(v, want, "{ty} element {j}: nearest moved a grid value");
                }
                // Parameters survive packing: the grids decoded again are the same.
                let again = fit_grids(ty, &block);
                for j in 0..bs {
                    let (a, b) = (fitted.grid(j), again.grid(j));
                    assert_eq!(
                        (a.a.to_bits(), a.b.to_bits()),
                        (b.a.to_bits(), b.b.to_bits())
                    );
                }
            }
        }
    }

    /// `nearest` picks the closest representable value among all codes.
    #[test]
    fn nearest_is_the_closest_code() {
        let mut rng = Rng(12345);
        let grids = [
            Grid::mul(0.37, 8, 0, 15),
            Grid::mul(-0.11, 32, 0, 63),
            Grid::with(Rule::MulAdd, 0.2, -1.3, 15),
            Grid::with(Rule::MulSub, 0.2, 1.3, 3),
            Grid::with(Rule::Table, 0.01, 0.0, 15),
            Grid::with(Rule::Sign, 0.5, 0.0, 1),
            Grid::mul(0.0, 1, 0, 2),
        ];
        for g in grids {
            for _ in 0..2000 {
                let x = (rng.unit() - 0.5) * 8.0;
                let (q, v) = g.nearest(x);
                assert_eq!(v.to_bits(), g.value(q).to_bits());
                let best = (g.lo..=g.hi)
                    .map(|c| (x - g.value(c)).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!((x - v).abs(), best, "{g:?} x = {x}");
            }
        }
    }
}
