//! Transparent huge pages for large answers only.
//!
//! A one-shot command starts with small pages: its start-up (the provider compiled, the
//! store opened, a few threads with a heap each) touches a little memory in many places,
//! and a 2 MiB page zeroed for each of those places costs more than the faults it
//! saves. A large answer (its text, index, table and XML, touched once from end to
//! end) is worth huge pages, so they are turned on when one arrives. The server keeps
//! small pages throughout: it lives long, and huge pages would double its resident
//! memory (docs/BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether huge pages are to be turned on when a large answer arrives.
static ON_FOR_LARGE: AtomicBool = AtomicBool::new(false);

/// Buffers of at least this many bytes are large: an answer's text (read from a file or
/// received), then its index.
pub const LARGE: usize = 1 << 20;

/// Small pages from now on, huge ones again once a large answer arrives.
pub fn small_until_large() {
    set_small(true);
    ON_FOR_LARGE.store(true, Ordering::Release);
}

/// Small pages from now on, for good.
pub fn small_only() {
    ON_FOR_LARGE.store(false, Ordering::Release);
    set_small(true);
}

/// Called before a buffer of `len` bytes for an answer is filled: from a [`LARGE`] one
/// on, huge pages again, where the command asked for them.
pub fn answer_ahead(len: usize) {
    if len >= LARGE && ON_FOR_LARGE.swap(false, Ordering::AcqRel) {
        set_small(false);
    }
}

/// Where the kernel refuses, pages stay as they are: memory and time, not correctness,
/// are at stake.
fn set_small(small: bool) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(small) {
        tracing::debug!("transparent huge pages unchanged: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = small;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The process's setting follows the commands: small pages until a large answer,
    /// then huge ones; small for good in the server, whatever arrives.
    #[test]
    fn huge_pages_follow_the_large_answer() {
        let small = || rustix::thread::transparent_huge_pages_are_disabled().unwrap();
        small_until_large();
        assert!(small());
        answer_ahead(LARGE - 1);
        assert!(small());
        answer_ahead(LARGE);
        assert!(!small());
        small_only();
        assert!(small());
        answer_ahead(LARGE);
        assert!(small());
        set_small(false);
        assert!(!small());
    }
}
