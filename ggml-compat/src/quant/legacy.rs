//! The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const Q4_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q4_1: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q5_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q5_1: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q8_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const Q8_1: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
