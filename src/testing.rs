//! Helpers shared by the unit tests.

/// The next value of the xorshift32 (13, 17, 5) generator `seed`, as a float in [−0.5, 0.5]:
/// deterministic test data.
pub(crate) fn xorshift(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    *seed as f32 / u32::MAX as f32 - 0.5
}
