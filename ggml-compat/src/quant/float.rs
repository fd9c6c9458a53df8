//! Plain floats: F32, F16 (IEEE half), BF16 (ggml's rounding).

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const F32: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const F16: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const BF16: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
