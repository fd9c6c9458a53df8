//! A persistent thread pool for data-parallel ops, in the style of ggml's CPU backend: every op
//! runs on all threads as `f(ith, nth)`, the caller being thread 0. Workers spin briefly after a
//! job (decode issues hundreds of small matmuls per token back to back), then park on a condvar
//! so an idle pool costs nothing.
//!
//! Two things keep the per-op cost low on a busy machine. Waking costs a system call only when
//! a worker is actually parked. And for task-queue ops ([`Parallel::run`]), where any thread can
//! do any task, the caller does not wait for a worker that has not started by the time the
//! queue is empty: it withdraws that worker's ticket (one compare-and-swap) and returns. A
//! worker descheduled by the OS therefore costs a decode step its share of the work, not a
//! whole time slice of waiting.

use crate::kernels::matmul::Parallel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps polling (spinning, then yielding) before it parks.
const SPIN: Duration = Duration::from_micros(200);
/// Busy-spin iterations before a waiting thread starts yielding its core: on an oversubscribed
/// machine a pure spin would burn the time slice the thread it waits for needs.
const SPIN_ITERS: u32 = 2048;

type Job = dyn Fn(usize, usize) + Sync;

/// A worker's progress, `generation << 2 | state`: the last job it ran (`RUNNING`, then
/// `DONE`) or that the caller withdrew from it (`DONE` without running). Before job `g` is
/// published every slot reads `ticket(g - 1, DONE)`; a worker enters job `g` by swapping that
/// for `ticket(g, RUNNING)`, the caller withdraws it by swapping it for `ticket(g, DONE)`.
/// Exactly one of the two swaps succeeds.
#[repr(align(64))]
struct Slot(AtomicUsize);

const RUNNING: usize = 1;
const DONE: usize = 2;

fn ticket(generation: usize, state: usize) -> usize {
    generation << 2 | state
}

struct Shared {
    nth: usize,
    /// The current job; valid while any worker slot is `RUNNING` it (see `dispatch`).
    job: Mutex<Option<JobPtr>>,
    /// The number of the latest job; workers wait for it to change.
    generation: AtomicUsize,
    /// Worker `ith` uses `slots[ith - 1]`.
    slots: Vec<Slot>,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

/// A lifetime-erased pointer to the caller's closure.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync`, and `dispatch` keeps it alive until every worker is done with
// it.
unsafe impl Send for JobPtr {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls from different threads.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n` threads in all (the caller plus `n - 1` workers).
    pub fn new(n: usize) -> ThreadPool {
        let nth = n.max(1);
        let shared = Arc::new(Shared {
            nth,
            job: Mutex::new(None),
            generation: AtomicUsize::new(0),
            slots: (1..nth)
                .map(|_| Slot(AtomicUsize::new(ticket(0, DONE))))
                .collect(),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let workers = (1..nth)
            .map(|ith| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{ith}"))
                    .spawn(move || worker(&shared, ith))
                    .expect("cannot spawn a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Threads in all, the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.nth
    }

    /// Runs `f(ith, nth)` for every `ith` in `0..nth` — `ith == 0` on the calling thread — and
    /// returns when all have finished. A panic in any of them is re-raised here.
    pub fn broadcast(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        self.dispatch(f, false);
    }

    /// Publishes `f` to the workers, runs `f(0, nth)`, then waits for the workers that entered
    /// the job. With `may_withdraw`, workers that have not entered it by then never will (the
    /// caller's own call must have done their share); otherwise every worker runs it.
    fn dispatch(&self, f: &(dyn Fn(usize, usize) + Sync), may_withdraw: bool) {
        let nth = self.shared.nth;
        if nth == 1 {
            f(0, 1);
            return;
        }
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the 'static lifetime is a lie told only to the workers, who stop using the
        // pointer before they mark their slot `DONE`; we wait for every slot to read `DONE` for
        // this job before returning, so `f` outlives every use.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        *s.job.lock().unwrap() = Some(JobPtr(ptr));
        // Only this thread (holding `running`) bumps the generation.
        let g = s.generation.load(Ordering::Relaxed) + 1;
        s.generation.store(g, Ordering::SeqCst);
        // A worker increments `sleepers` before its last look at `generation` (both SeqCst):
        // if we read 0 here, that look sees `g` and it does not park.
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.wake_lock.lock().unwrap();
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, nth)));
        for slot in &s.slots {
            let withdrawn = may_withdraw
                && slot
                    .0
                    .compare_exchange(
                        ticket(g - 1, DONE),
                        ticket(g, DONE),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if !withdrawn {
                let mut spins = 0u32;
                while slot.0.load(Ordering::Acquire) != ticket(g, DONE) {
                    backoff(&mut spins);
                }
            }
        }
        *s.job.lock().unwrap() = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kiln worker thread panicked");
        }
    }
}

fn worker(s: &Shared, ith: usize) {
    let slot = &s.slots[ith - 1].0;
    let mut seen = 0usize;
    loop {
        // Wait for a new generation: spin, then yield, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            // Reading the clock costs a syscall-free vDSO call; only do it once in a while.
            if spins < SPIN_ITERS || !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                backoff(&mut spins);
                continue;
            }
            let guard = s.wake_lock.lock().unwrap();
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::Acquire) {
                drop(
                    s.wake
                        .wait_timeout(guard, Duration::from_millis(100))
                        .unwrap(),
                );
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        let g = s.generation.load(Ordering::Acquire);
        seen = g;
        // Enter job g unless the caller withdrew this worker from it (then the swap fails and
        // we wait for the next one).
        if slot
            .compare_exchange(
                ticket(g - 1, DONE),
                ticket(g, RUNNING),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            continue;
        }
        let job = *s.job.lock().unwrap();
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `dispatch` keeps the closure alive until this slot reads `DONE` (below).
            let f = unsafe { &*ptr };
            if catch_unwind(AssertUnwindSafe(|| f(ith, s.nth))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        slot.store(ticket(g, DONE), Ordering::Release);
    }
}

/// Matmul and attention hand out `n_tasks` independent tasks; every thread pulls task indices
/// from one atomic counter until none are left (ggml's chunk counter). A worker that has not
/// started when the counter runs out is withdrawn, not waited for.
impl Parallel for ThreadPool {
    fn threads(&self) -> usize {
        self.n_threads()
    }

    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks <= 1 || self.n_threads() == 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        let next = AtomicUsize::new(0);
        self.dispatch(
            &|_, _| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_tasks {
                    break;
                }
                task(i);
            },
            true,
        );
    }
}

/// One step of waiting: busy-spin for a while, then give the core away.
#[inline]
fn backoff(spins: &mut u32) {
    *spins = spins.saturating_add(1);
    if *spins < SPIN_ITERS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _l = self.shared.wake_lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_thread_runs_once_per_job() {
        let pool = ThreadPool::new(4);
        for _ in 0..1000 {
            let hits: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
            pool.broadcast(&|ith, nth| {
                assert_eq!(nth, 4);
                hits[ith].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn borrows_caller_data_and_parks_between_jobs() {
        let pool = ThreadPool::new(3);
        let data: Vec<u64> = (0..3000).collect();
        let sum = AtomicU64::new(0);
        for round in 0..3 {
            if round == 1 {
                std::thread::sleep(SPIN * 5); // workers park; the next job must wake them
            }
            sum.store(0, Ordering::Relaxed);
            pool.broadcast(&|ith, nth| {
                let part: u64 = data.iter().skip(ith).step_by(nth).sum();
                sum.fetch_add(part, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 3000 * 2999 / 2);
        }
    }

    #[test]
    fn worker_panic_is_reported_to_the_caller() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.broadcast(&|ith, _| assert_ne!(ith, 1))
        }));
        assert!(r.is_err());
        // The pool stays usable.
        let n = AtomicU64::new(0);
        pool.broadcast(&|_, _| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn run_does_every_task_once_even_when_workers_are_withdrawn() {
        let pool = ThreadPool::new(3);
        for round in 0..2000 {
            let n = 1 + round % 17;
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
            if round % 500 == 0 {
                std::thread::sleep(SPIN * 3); // let the workers park
            }
        }
        // broadcast still reaches every thread after withdrawals.
        let hits: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        pool.broadcast(&|ith, _| {
            hits[ith].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }
}
