//! The pool's other workers kept awake while a solve runs.
//!
//! A solve is a chain of evaluations of tens to hundreds of microseconds each; each fans its
//! graphs out to the pool, and a graph holding most of the work forks its subtrees
//! ([`crate::latency::Workspace::set_forking`]). An idle rayon worker goes to sleep, and
//! waking it took 65 us on average on the 2-core development VM (measured from a fork to its
//! stolen half starting): the calling thread had usually done all the work itself by then.
//! So while a solve with work for several threads runs, each other worker runs a loop that
//! executes any pending job of the pool ([`rayon::yield_now`]) and spins when there is none,
//! as OpenMP's active wait policy does; work is then picked up within a microsecond or two.
//!
//! The loops are not waited for: each ends at its next look at the flag once the solve is
//! done, or once a job it picked up returns (a job may be long, e.g. another simulation; the
//! solve does not wait for it). They cost the other cores' idle time during the solve.
//!
//! A loop must never start above a solve's own work on the same thread: a worker that took
//! its broadcast job while waiting inside a part of an evaluation it had stolen spun until
//! the solve ended, and the solve waited for that part (one `cargo bench` run in about a
//! dozen hung).
//! So every piece of a solve's work runs inside [`busy`], and a thread inside it never
//! starts a loop.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Whether this thread is already running an awake loop (a nested one would keep the
    /// job below it from returning).
    static AWAKE: Cell<bool> = const { Cell::new(false) };
    /// How many pieces of solve work this thread is inside ([`busy`]).
    static BUSY: Cell<u32> = const { Cell::new(0) };
}

/// Leaves a [`busy`] section (also when its work panics).
struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        BUSY.set(BUSY.get() - 1);
    }
}

/// Runs `f` as a piece of a solve's work: every task a solve hands to the pool (each graph's
/// evaluation, each half of a forked one) and the solve itself run inside it.
pub(crate) fn busy<T>(f: impl FnOnce() -> T) -> T {
    BUSY.set(BUSY.get() + 1);
    let _leave = Leave;
    f()
}

/// Sets the flag when dropped (also when `f` panics).
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` on a worker of the current rayon pool (from outside the pool: on one of its
/// workers), with the pool's other workers awake while it runs.
pub fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| {
        let done = Done(Arc::new(AtomicBool::new(false)));
        let owner = rayon::current_thread_index();
        if rayon::current_num_threads() > 1 {
            let flag = Arc::clone(&done.0);
            // One job per worker (a broadcast: no worker can take another's).
            rayon::spawn_broadcast(move |ctx| {
                // The solve's own thread (which runs its job while waiting in a join), a
                // thread already in a loop, and one inside a solve's work, leave at once.
                if Some(ctx.index()) == owner || AWAKE.get() || BUSY.get() > 0 {
                    return;
                }
                AWAKE.set(true);
                while !flag.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
                AWAKE.set(false);
            });
        }
        busy(f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_parallel_runs_return() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        // Runs inside runs, in parallel, and on every worker: each returns (a loop that kept
        // the job below it from returning would hang here), with its value.
        let sums: Vec<u64> = pool.install(|| {
            use rayon::prelude::*;
            (0..16u64)
                .into_par_iter()
                .map(|i| run(|| run(|| (0..1000u64).into_par_iter().map(|x| x * i).sum())))
                .collect()
        });
        let want: Vec<u64> = (0..16u64).map(|i| i * 999 * 1000 / 2).collect();
        assert_eq!(sums, want);
        // A panic inside propagates out of `run`.
        let caught = pool.install(|| std::panic::catch_unwind(|| run(|| panic!("inside"))));
        assert!(caught.is_err());
    }

    #[test]
    fn the_loops_flag_is_set_when_f_panics() {
        let flag = Arc::new(AtomicBool::new(false));
        let caught = std::panic::catch_unwind(|| {
            let _done = Done(Arc::clone(&flag));
            panic!("inside");
        });
        assert!(caught.is_err());
        assert!(flag.load(Ordering::Acquire), "a panicking solve would leave the loops spinning");
    }
}
