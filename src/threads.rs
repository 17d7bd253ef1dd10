//! The threads quantops starts inside a PostgreSQL process (rayon pools, the embedding pipeline).
//! They compute in plain Rust and never call into PostgreSQL; they also never run its signal
//! handlers: each blocks every signal as it starts, so a SIGTERM or SIGUSR1 meant for the backend
//! is always taken by the backend's own thread.

use std::sync::OnceLock;

/// Blocks every signal in the calling thread (a thread we started, never the backend's).
pub fn block_signals() {
    // SAFETY: a zeroed sigset_t filled by sigfillset, applied to the calling thread only
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// A pool of `threads` whose threads block every signal as they start.
pub fn build(threads: usize, name: &'static str) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(|_| block_signals())
        .build()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pool built once per process on first use; a failed build (a process or thread limit) is an
/// error now and tried again next time.
fn get_or_build(
    cell: &'static OnceLock<rayon::ThreadPool>,
    threads: usize,
    name: &'static str,
) -> Result<&'static rayon::ThreadPool, String> {
    if let Some(p) = cell.get() {
        return Ok(p);
    }
    let p = build(threads, name).map_err(|e| format!("could not start quantops' threads: {e}"))?;
    Ok(cell.get_or_init(|| p))
}

/// A pool with a thread per core, for work the backend waits for (k-means, recall, embedding
/// when nothing else runs). Built on first use, in the process that uses it (never the
/// postmaster: threads do not survive fork).
pub fn pool() -> Result<&'static rayon::ThreadPool, String> {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    get_or_build(&POOL, cores(), "quantops")
}

/// Runs `f` (which uses rayon) in the pool it is called from, else in quantops' own `pool()`.
/// Pure: the SQL layer starts the pool first ([`ensure_pool`] raises 53000 when it cannot), so
/// here it exists; the pure cores and their unit tests call this freely.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    match pool() {
        Ok(p) => p.install(f),
        // only reachable if a caller skipped ensure_pool() and the threads cannot start: a bug
        Err(e) => panic!("quantops: {e}"),
    }
}

/// A pool with one thread fewer than the cores (at least one), for work that runs while the
/// backend writes: the backend keeps a core to itself.
pub fn pipeline_pool() -> Result<&'static rayon::ThreadPool, String> {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    get_or_build(&POOL, cores() - 1, "quantops-embed")
}

#[cfg(test)]
mod tests {
    fn blocked(sig: libc::c_int) -> bool {
        // SAFETY: reads the calling thread's own signal mask into a zeroed set
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, sig) == 1
        }
    }

    #[test]
    fn pool_threads_never_take_the_backends_signals() {
        for pool in [super::pool().unwrap(), super::pipeline_pool().unwrap()] {
            let all = pool.install(|| {
                use rayon::prelude::*;
                (0..64).into_par_iter().map(|_| blocked(libc::SIGTERM) && blocked(libc::SIGUSR1) && blocked(libc::SIGINT)).all(|b| b)
            });
            assert!(all);
        }
        assert!(!blocked(libc::SIGUSR2), "the calling thread keeps its mask");
        assert!(super::pipeline_pool().unwrap().current_num_threads() >= 1);
    }
}
