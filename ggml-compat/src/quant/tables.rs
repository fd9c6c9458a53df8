//! ggml's value tables (`ggml-common.h`) shared by the quantizers here and the dot-product
//! kernels that read the same blocks.

/// ggml's `kvalues_iq4nl`: the 16 non-linear levels of IQ4_NL and IQ4_XS, sorted (so
/// `best_index_int8` can bisect them).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `kvalues_mxfp4`: the E2M1 values times two (so they are integers); index bit 3 is the
/// sign. MXFP4 scales them by [`e8m0_to_fp32_half`](super::float::e8m0_to_fp32_half).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];
