//! Giving the memory a request flood used back to the operating system once the flood is over.
//!
//! A batch of 1,000 queries holds about a megabyte while it is answered (its body, the parsed
//! queries, the answers and their JSON), so a flood on many connections at once peaks at
//! hundreds of megabytes. Nothing keeps that memory once the requests are answered, but glibc's
//! allocator keeps the freed pages in its per-thread arenas for reuse rather than returning
//! them: measured on `pooch run --http` after the input was read, 128 connections sending
//! 2,000 batches of 1,000 queries left the resident set at 251 MB (68 MB before), and one
//! `malloc_trim(0)` called from outside (`gdb -p PID -batch -ex 'call malloc_trim(0)'`) took it
//! to 38 MB. The HTTP server therefore calls [`release_free_memory`] once it is idle after
//! answering requests (see `trim_when_idle` in [`crate::serve::http`]).

/// Returns the allocator's free pages to the operating system; whether any were returned.
///
/// On glibc this is `malloc_trim(0)`, which walks every arena (holding each one's lock while it
/// does) and releases its unused pages. Other allocators and platforms return freed memory on
/// their own terms; there it does nothing.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only touches the allocator's own state,
        // under the allocator's locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
