//! MXFP4: OCP microscaling 4-bit floats (E2M1) with an E8M0 block exponent.

use super::{not_ported_quantize, not_ported_to_float, QuantFns};

pub const MXFP4: QuantFns = QuantFns {
    to_float: not_ported_to_float,
    quantize: not_ported_quantize,
    uses_imatrix: false,
};
