//! The wall clock, in unix milliseconds: what stamps snapshots and supervisor decisions.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in unix milliseconds; 0 for a clock set before 1970, `u64::MAX` far past it.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
