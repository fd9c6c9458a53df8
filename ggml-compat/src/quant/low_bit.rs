//! 1- and 2-bit formats Q1_0 (sign times scale) and Q2_0 (four levels times scale).

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const Q1_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q2_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
