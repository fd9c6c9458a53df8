//! Ternary formats TQ1_0 (1.69 bpw) and TQ2_0 (2.06 bpw).

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const TQ1_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const TQ2_0: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
