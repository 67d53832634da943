//! Work in two halves on two cores: the first half on the calling thread, the second on
//! a pool of helper threads (one per core beyond the first), started once and kept.
//!
//! Why not `rayon::join`: called from outside its pool (the main thread, a server
//! worker), it hands both halves to the pool and waits, and idle pool threads spin for a
//! while before they sleep; on two cores that is three threads for two. Here the caller
//! keeps its half, and one helper per spare core takes the other.

use std::sync::OnceLock;

/// The helper threads; `None` where none could be started (everything runs on the
/// caller then).
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("healthpull-half-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// `a` on this thread and `b` on a helper at the same time; both results once both are
/// done (a panic in either is passed on).
pub fn both<RA, RB: Send>(a: impl FnOnce() -> RA, b: impl FnOnce() -> RB + Send) -> (RA, RB) {
    let Some(pool) = pool() else {
        return (a(), b());
    };
    let mut later = None;
    let earlier = pool.in_place_scope(|scope| {
        scope.spawn(|_| later = Some(b()));
        a()
    });
    // The scope returns once the spawned half has run (or passes its panic on).
    match later {
        Some(later) => (earlier, later),
        None => unreachable!("a scope ends after its spawned work"),
    }
}

/// `b` started on a helper while the caller goes on; for work the caller may end up
/// doing itself (see `transform`'s indexer). `a` is given nothing back from `b`: they
/// talk through what both borrow.
pub fn beside<R>(a: impl FnOnce() -> R, b: impl FnOnce() + Send) -> R {
    let Some(pool) = pool() else {
        let done = a();
        b();
        return done;
    };
    pool.in_place_scope(|scope| {
        scope.spawn(|_| b());
        a()
    })
}

#[cfg(test)]
mod tests {
    /// Both halves run, each result where it belongs, the second on another thread.
    #[test]
    fn both_halves_run() {
        let here = std::thread::current().id();
        let (a, (b, there)) = super::both(|| 1 + 1, || (2 * 3, std::thread::current().id()));
        assert_eq!((a, b), (2, 6));
        assert_ne!(here, there);
        let mut seen = false;
        let out = super::beside(|| 7, || seen = true);
        assert_eq!(out, 7);
        assert!(seen);
    }
}
