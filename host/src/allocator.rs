//! Tuning of glibc's allocator for a process that holds a bounded working set for a long time.
//!
//! Two defaults of glibc cost a sync its memory bound, not its speed:
//! - one arena per thread up to eight per core: the runtime's workers and blocking threads each
//!   fill and fragment their own, so a first sync of 10k groups peaked at 118 MiB resident over
//!   a 69 MiB heap; with two arenas, 99 MiB (BENCHMARKS.md);
//! - the moving mmap threshold: after one cycle with a 10 MB value every later allocation up to
//!   that size comes from the arenas, where it fragments them and `malloc_trim` cannot give the
//!   pages back (97 MiB stayed resident after a hostile cycle, 43 MiB with it pinned).
//!
//! A setting given in the environment (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`) wins, so an
//! operator can still tune either without a rebuild.

/// Arenas kept: the two cores the daemon is sized for. More threads than arenas share them,
/// which costs a little contention on the few hot paths that allocate across threads.
pub const ARENAS: i32 = 2;

/// glibc's default starting mmap threshold; setting it at all turns the moving threshold off.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Applies the tuning. Call it first thing in `main`, before any thread exists: arenas already
/// created are kept.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only changes a tuning parameter of the allocator.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// Gives the memory a cycle freed back to the system. glibc keeps freed heap in its arenas, so
/// without this a daemon stays at the peak of its biggest cycle (a whole-tenant pass, a group
/// with huge rule output) for its whole life.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
