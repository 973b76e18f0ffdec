//! The testing kit: a fake clock, and helpers that run one test against every backend and check
//! that nothing leaked.
//!
//! Protocols and time-driven code are tested here without sockets and without sleeping.
//! Reactor-level tests use [`reactor_test!`](crate::reactor_test), which expands one test body
//! into one `#[test]` per backend, each ending with [`LeakCheck`].
//!
//! The `testing` cargo feature adds the process-global helpers of torsion's own tests
//! (descriptor counts, signal storms, RLIMIT_NOFILE, SIGPIPE, `output_within`): they change the
//! whole process, so they are not part of the default API.

mod clock;
mod memory;
mod pair;
#[cfg(any(test, feature = "testing"))]
mod process;
mod string_transport;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use clock::Clock;
pub use memory::{
    MemoryPoller, MemoryPollerHandle, MemoryReactor, TcpClient, TcpServer, UnixClient, UnixServer,
};
pub use pair::{connected_pair, connected_pair_with, flush_all, IoPump, FLUSH_ROUNDS};
#[cfg(any(test, feature = "testing"))]
pub use process::{
    install_noop_signal_handler, open_fd_count, output_within, reap_left_child,
    restore_default_sigpipe, serial, set_open_files_limit, signal_process, signal_storm,
    thread_cpu_time,
};
pub use string_transport::StringTransport;

use crate::{Backend, Reactor};

/// Number of open file descriptors of this process (entries of `/proc/self/fd`).
fn fd_count() -> usize {
    // The directory handle itself shows up in the listing: subtract it.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The lock that serialises the tests that count the process's descriptors.
pub(crate) fn lock_serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records the descriptor count at the start of a test; [`check`](LeakCheck::check) asserts
/// that the reactor watches nothing but its waker, has no pending timer, task or signal
/// handler, and that once it is dropped the descriptor count is back to the baseline and no
/// child process that torsion spawned since the baseline is left unreaped (running or a
/// zombie).
#[derive(Debug)]
pub struct LeakCheck {
    baseline: usize,
    children: Vec<u32>,
}

impl LeakCheck {
    /// Takes the baseline. Make it before creating the reactor.
    pub fn new() -> LeakCheck {
        // The process-wide stop-signal eventfd is made by the first `run` and kept for the
        // life of the process: make it now, so that it is part of the baseline, not a leak.
        let _ = crate::sys::signal_fd();
        LeakCheck {
            baseline: fd_count(),
            children: crate::process::unreaped_children(),
        }
    }

    /// Asserts that `reactor` is clean, drops it, and asserts the descriptor count.
    ///
    /// # Panics
    /// When anything leaked, naming what.
    pub fn check(self, reactor: Reactor) {
        let backend = reactor.poller_name();
        assert_eq!(
            reactor.queued_calls(),
            0,
            "{backend}: calls still queued with call_soon"
        );
        assert_eq!(
            reactor.descriptor_count(),
            0,
            "{backend}: descriptors still registered"
        );
        let timers = reactor.delayed_calls();
        assert!(
            timers.is_empty(),
            "{backend}: timers still pending: {timers:?}"
        );
        assert_eq!(reactor.task_count(), 0, "{backend}: tasks still pending");
        assert_eq!(
            reactor.signal_handler_count(),
            0,
            "{backend}: signal handlers still installed"
        );
        drop(reactor);
        let children: Vec<String> = crate::process::unreaped_children()
            .into_iter()
            .filter(|p| !self.children.contains(p))
            .map(|p| {
                let state = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        let after = s.rsplit_once(')')?.1.trim_start().chars().next()?;
                        Some(if after == 'Z' { "zombie" } else { "running" })
                    })
                    .unwrap_or("?");
                format!("{p} ({state})")
            })
            .collect();
        assert!(
            children.is_empty(),
            "{backend}: child processes not reaped: {children:?}"
        );
        // Another thread of the test process (a pool thread finishing a job, the harness) may
        // hold a descriptor for a moment, at the baseline or now: a leak is a count that stays
        // above the baseline, so look again for a while before failing. A count below it is a
        // descriptor that was open, briefly, when the baseline was taken.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut now = fd_count();
        while now > self.baseline && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            now = fd_count();
        }
        assert!(
            now <= self.baseline,
            "{backend}: open descriptors {now}, baseline {}",
            self.baseline
        );
    }
}

impl Default for LeakCheck {
    fn default() -> Self {
        LeakCheck::new()
    }
}

/// Runs `body` on a fresh reactor of `backend`, serialised with other such tests, then checks
/// for leaks with [`LeakCheck`]. This is what [`reactor_test!`](crate::reactor_test) expands to.
pub fn run_reactor_test(backend: Backend, body: impl FnOnce(&Reactor)) {
    let _serial = lock_serial();
    let leaks = LeakCheck::new();
    let reactor = Reactor::with_backend(backend).expect("reactor");
    body(&reactor);
    leaks.check(reactor);
}

/// Defines one test per backend (`select`, `poll`, `epoll`, `io_uring`) from one body, each run through
/// [`run_reactor_test`] so that it ends with the leak check.
///
/// ```
/// use torsion::reactor_test;
///
/// reactor_test! {
///     fn stops_from_a_timer(reactor) {
///         reactor.call_later(std::time::Duration::ZERO, |r| r.stop().unwrap());
///         reactor.run().unwrap();
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! reactor_test {
    ($(fn $name:ident($reactor:ident) $body:block)*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($reactor: &$crate::Reactor) $body

                #[test]
                fn select() {
                    $crate::testing::run_reactor_test($crate::Backend::Select, body)
                }

                #[test]
                fn poll() {
                    $crate::testing::run_reactor_test($crate::Backend::Poll, body)
                }

                #[test]
                fn epoll() {
                    $crate::testing::run_reactor_test($crate::Backend::Epoll, body)
                }

                #[test]
                fn io_uring() {
                    // Where the kernel refuses io_uring the test runs on epoll, as the
                    // default choice would.
                    let backend = if $crate::Backend::IoUring.available() {
                        $crate::Backend::IoUring
                    } else {
                        ::std::eprintln!("io_uring is unavailable: running on epoll");
                        $crate::Backend::Epoll
                    };
                    $crate::testing::run_reactor_test(backend, body)
                }
            }
        )*
    };
}

/// Iterates `reactor` (at most 20 ms per poll) until `done()` is true.
///
/// # Panics
/// When `limit` passes first: a test that waits on real I/O fails instead of hanging. Give a
/// generous limit; the machine running the tests may be busy.
pub fn run_until(reactor: &Reactor, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "run_until: still waiting after {limit:?}"
        );
        reactor
            .iterate(Some(Duration::from_millis(20)))
            .expect("the reactor's poller failed");
    }
}

/// The value a fired Deferred holds (Twisted trial's `successResultOf`).
///
/// # Panics
/// When the Deferred has no result yet, or holds a failure (shown in the message).
#[doc(alias = "successResultOf")]
pub fn success_result_of<T: 'static>(d: crate::Deferred<T>) -> T {
    match d.try_result() {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => panic!("expected a value, got failure {f:?}"),
        Err(d) => panic!("expected a result, Deferred is {d:?}"),
    }
}

/// The failure a fired Deferred holds (Twisted trial's `failureResultOf`); it counts as handled.
///
/// # Panics
/// When the Deferred has no result yet, or holds a value.
#[doc(alias = "failureResultOf")]
pub fn failure_result_of<T: 'static>(d: crate::Deferred<T>) -> crate::Failure {
    match d.try_result() {
        Ok(Err(f)) => f,
        Ok(Ok(_)) => panic!("expected a failure, got a value"),
        Err(d) => panic!("expected a result, Deferred is {d:?}"),
    }
}
