//! Hashing: strings to symbols, and (namespace, level) pairs to model coordinates.
//!
//! Both use XXH3, whose output is specified and the same on every platform and release, so
//! symbols and coordinates are stable across runs, processes and snapshot files.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::fact::Symbol;

/// The symbol of a string value.
pub fn symbol(bytes: &[u8]) -> Symbol {
    xxh3_64(bytes)
}

/// The coordinate reserved for the intercept.
pub const BIAS: u32 = 0;

/// The model coordinate of `level` within `namespace`, for a model of `2^bits` weights.
///
/// Coordinate 0 is the intercept's alone: a hash that lands there moves to 1.
pub fn coordinate(namespace: Symbol, level: u64, bits: u32) -> u32 {
    let mask = (1u64 << bits) - 1;
    let index = (xxh3_64_with_seed(&level.to_le_bytes(), namespace) & mask) as u32;
    if index == BIAS { 1 } else { index }
}

/// The level of a pair of levels, for crossed features: the hash of both, in order.
pub fn pair(first: u64, second: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&first.to_le_bytes());
    bytes[8..].copy_from_slice(&second.to_le_bytes());
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_stable() {
        // XXH3-64 of the empty input, from the reference implementation.
        assert_eq!(symbol(b""), 0x2d06_8005_38d3_94c2);
        assert_ne!(symbol(b"ball"), symbol(b"stick"));
    }

    #[test]
    fn coordinates_stay_in_range_and_avoid_the_intercept() {
        for level in 0..10_000u64 {
            let index = coordinate(symbol(b"hashtags"), level, 4);
            assert!(index < 16 && index != BIAS);
        }
    }
}
