//! The testing kit: a fake clock, and helpers that run one test against every backend and check
//! that nothing leaked.
//!
//! Protocols and time-driven code are tested here without sockets and without sleeping.
//! Reactor-level tests use [`reactor_test!`](crate::reactor_test), which expands one test body
//! into one `#[test]` per backend, each ending with [`LeakCheck`].

mod clock;
mod memory;
mod pair;
mod string_transport;

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use clock::Clock;
pub use memory::{MemoryPoller, MemoryPollerHandle, MemoryReactor, TcpClient, TcpServer};
pub use pair::{connected_pair, connected_pair_with, flush_all, IoPump, FLUSH_ROUNDS};
pub use string_transport::StringTransport;

use crate::{sys, Backend, Reactor};

/// Number of open file descriptors of this process (entries of `/proc/self/fd`).
pub fn open_fd_count() -> usize {
    // The directory handle itself shows up in the listing: subtract it.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// CPU time (user + system) used so far by the calling thread (getrusage `RUSAGE_THREAD`).
///
/// # Errors
/// The system error.
pub fn thread_cpu_time() -> io::Result<Duration> {
    sys::thread_cpu_time()
}

/// Runs `f` on the calling thread while a helper thread sends it signal `sig` (e.g.
/// `libc::SIGUSR1`, 10 on Linux) every `every`, to check that EINTR never surfaces. The helper
/// stops and is joined before this returns, so the signalled thread is alive for every signal.
/// Returns `f`'s result and the number of signals sent. Install a handler first
/// ([`install_noop_signal_handler`]): the default action of most signals ends the process.
///
/// # Errors
/// The system error when a signal cannot be sent.
pub fn signal_storm<R>(sig: i32, every: Duration, f: impl FnOnce() -> R) -> io::Result<(R, u64)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let target = sys::current_thread();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let storm = scope.spawn(|| -> io::Result<u64> {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                // The target is the thread running `f` below, which cannot exit before this
                // scope ends: `stop` is set and this thread joined first.
                sys::signal_thread(target, sig)?;
                sent += 1;
                std::thread::sleep(every);
            }
            Ok(sent)
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        let sent = storm
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok((result, sent))
    })
}

/// Installs a do-nothing handler for `sig` without `SA_RESTART`, so that a blocking system call
/// interrupted by the signal fails with EINTR (the case the reactor must hide).
///
/// # Errors
/// The system error.
pub fn install_noop_signal_handler(sig: i32) -> io::Result<()> {
    sys::install_noop_handler(sig)
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises tests that count the process's descriptors, so parallel tests in the same binary
/// do not disturb each other's counts.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records the descriptor count at the start of a test; [`check`](LeakCheck::check) asserts
/// that the reactor watches nothing but its waker, has no pending timer or task, and that once
/// it is dropped the descriptor count is back to the baseline.
#[derive(Debug)]
pub struct LeakCheck {
    baseline: usize,
}

impl LeakCheck {
    /// Takes the baseline. Make it before creating the reactor.
    pub fn new() -> LeakCheck {
        LeakCheck {
            baseline: open_fd_count(),
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
        drop(reactor);
        let now = open_fd_count();
        assert_eq!(
            now, self.baseline,
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
    let _serial = serial();
    let leaks = LeakCheck::new();
    let reactor = Reactor::with_backend(backend).expect("reactor");
    body(&reactor);
    leaks.check(reactor);
}

/// Defines one test per backend (`select`, `poll`, `epoll`) from one body, each run through
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
            }
        )*
    };
}

/// Sets this process's soft RLIMIT_NOFILE (capped at the hard limit), to test behaviour at
/// descriptor exhaustion. Use it in a child process: it affects the whole process.
///
/// # Errors
/// The system error.
pub fn set_open_files_limit(soft: u64) -> io::Result<()> {
    sys::set_nofile_limit(soft)
}

/// Restores SIGPIPE's default action (terminate the process), as some host programs do, to
/// check that torsion never lets a write to a vanished peer raise it.
///
/// # Errors
/// The system error.
pub fn restore_default_sigpipe() -> io::Result<()> {
    sys::default_sigpipe()
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
pub fn failure_result_of<T: 'static>(d: crate::Deferred<T>) -> crate::Failure {
    match d.try_result() {
        Ok(Err(f)) => f,
        Ok(Ok(_)) => panic!("expected a failure, got a value"),
        Err(d) => panic!("expected a result, Deferred is {d:?}"),
    }
}

/// Runs `cmd` to completion with its output captured, like [`Command::output`], but kills it
/// and fails with [`io::ErrorKind::TimedOut`] when it runs longer than `limit`: a test that
/// starts a program must fail when the program hangs, not stall the suite. Standard input is
/// `/dev/null`.
///
/// # Errors
/// Spawning or waiting failed, or the time ran out (the error carries the program's stderr).
///
/// # Examples
/// ```
/// use std::process::Command;
/// use std::time::Duration;
///
/// use torsion::testing::output_within;
///
/// let out = output_within(Command::new("echo").arg("hi"), Duration::from_secs(60))?;
/// assert_eq!(out.stdout, b"hi\n");
/// let err = output_within(Command::new("sleep").arg("5"), Duration::from_millis(50)).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn output_within(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    fn collect(pipe: Option<impl Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            let _ = tx.send(v);
        });
        rx
    }
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            // A grandchild may still hold the pipe open: do not wait long for the rest.
            let stderr = err.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{cmd:?} did not finish within {limit:?}; its stderr: {}",
                    String::from_utf8_lossy(&stderr)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out.recv().unwrap_or_default(),
        stderr: err.recv().unwrap_or_default(),
    })
}
