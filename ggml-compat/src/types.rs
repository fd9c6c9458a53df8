//! The ggml type system: ids as in `ggml.h`, block geometry as in `ggml.c`'s `type_traits[]`.
//!
//! Every id ggml defines is recognized here, so any GGUF file can be opened and inspected.
//! Whether kiln can *compute* with a type is a separate question, answered by
//! [`crate::quant::fns`] (reference conversion) and by the kernel table in the `kiln` crate.

use std::fmt;

/// Elements in a K-quant super-block (`QK_K` in ggml-common.h).
pub const QK_K: usize = 256;

/// A ggml tensor element type. Discriminants are ggml's ids and appear verbatim in GGUF files.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Name, elements per block and bytes per block of one type (ggml's `type_traits[]`).
struct Geometry {
    name: &'static str,
    block_size: usize,
    type_size: usize,
}

const fn geo(name: &'static str, block_size: usize, type_size: usize) -> Geometry {
    Geometry {
        name,
        block_size,
        type_size,
    }
}

impl GgmlType {
    /// Every type ggml defines, in id order.
    pub const ALL: [GgmlType; 35] = {
        use GgmlType::*;
        [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
            IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64,
            IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0,
        ]
    };

    /// The single table of geometry; the sizes are checked against the block structs in
    /// `blocks.rs` by `tests::geometry_matches_block_structs`.
    const fn geometry(self) -> Geometry {
        use GgmlType::*;
        match self {
            F32 => geo("F32", 1, 4),
            F16 => geo("F16", 1, 2),
            Q4_0 => geo("Q4_0", 32, 18),
            Q4_1 => geo("Q4_1", 32, 20),
            Q5_0 => geo("Q5_0", 32, 22),
            Q5_1 => geo("Q5_1", 32, 24),
            Q8_0 => geo("Q8_0", 32, 34),
            Q8_1 => geo("Q8_1", 32, 36),
            Q2_K => geo("Q2_K", QK_K, 84),
            Q3_K => geo("Q3_K", QK_K, 110),
            Q4_K => geo("Q4_K", QK_K, 144),
            Q5_K => geo("Q5_K", QK_K, 176),
            Q6_K => geo("Q6_K", QK_K, 210),
            Q8_K => geo("Q8_K", QK_K, 292),
            IQ2_XXS => geo("IQ2_XXS", QK_K, 66),
            IQ2_XS => geo("IQ2_XS", QK_K, 74),
            IQ3_XXS => geo("IQ3_XXS", QK_K, 98),
            IQ1_S => geo("IQ1_S", QK_K, 50),
            IQ4_NL => geo("IQ4_NL", 32, 18),
            IQ3_S => geo("IQ3_S", QK_K, 110),
            IQ2_S => geo("IQ2_S", QK_K, 82),
            IQ4_XS => geo("IQ4_XS", QK_K, 136),
            I8 => geo("I8", 1, 1),
            I16 => geo("I16", 1, 2),
            I32 => geo("I32", 1, 4),
            I64 => geo("I64", 1, 8),
            F64 => geo("F64", 1, 8),
            IQ1_M => geo("IQ1_M", QK_K, 56),
            BF16 => geo("BF16", 1, 2),
            TQ1_0 => geo("TQ1_0", QK_K, 54),
            TQ2_0 => geo("TQ2_0", QK_K, 66),
            MXFP4 => geo("MXFP4", 32, 17),
            NVFP4 => geo("NVFP4", 64, 36),
            Q1_0 => geo("Q1_0", 128, 18),
            Q2_0 => geo("Q2_0", 64, 18),
        }
    }

    /// The type with ggml id `id`, or `None` for ids ggml does not define (or has removed:
    /// 4, 5 and the old repacked 31–33, 36–38).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The type named `name` as ggml spells it (`"Q4_K"`), ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub const fn id(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        self.geometry().name
    }

    /// Elements per block (`ggml_blck_size`).
    pub const fn block_size(self) -> usize {
        self.geometry().block_size
    }

    /// Bytes per block (`ggml_type_size`).
    pub const fn type_size(self) -> usize {
        self.geometry().type_size
    }

    /// Bytes taken by `n` elements, or `None` if `n` is not a whole number of blocks
    /// (or the byte count overflows).
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// Bits per weight of the format.
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    /// Whether this is a block-quantized format (as opposed to plain floats or integers).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_rejected() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None, "id {removed}");
        }
    }

    #[test]
    fn row_bytes_checks_block_multiples() {
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    }
}
