//! Non-linear 4-bit formats: IQ4_NL and IQ4_XS (table `kvalues_iq4nl`).

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const IQ4_NL: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
pub const IQ4_XS: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
