//! Process-global helpers for torsion's own tests (the `testing` feature): descriptor counts,
//! thread CPU time, signal storms, RLIMIT_NOFILE, SIGPIPE, and running a program with a time
//! limit. They read or change the state of the whole process, so they are not part of the
//! library's default API; [`testing`](super) re-exports them under the same names.

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::sys;

/// Number of open file descriptors of this process (entries of `/proc/self/fd`).
pub fn open_fd_count() -> usize {
    super::fd_count()
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

/// Sends signal `sig` (e.g. `libc::SIGINT`, 2 on Linux) to the process `pid`, as `kill -SIG
/// PID` does, without needing the `kill` program.
///
/// # Errors
/// The system error (no such process, not permitted).
pub fn signal_process(pid: u32, sig: i32) -> io::Result<()> {
    sys::kill(pid, sig)
}

/// Waits for and reaps a child that torsion spawned and left running at its reactor's
/// shutdown ([`OnShutdown::Leave`](crate::process::OnShutdown::Leave)), so that a test of that
/// policy leaves no zombie.
///
/// # Errors
/// `NotFound` for a pid torsion did not leave unreaped, or the system error.
pub fn reap_left_child(pid: u32) -> io::Result<crate::process::ExitStatus> {
    crate::process::reap_left(pid)
}

/// Serialises tests that count the process's descriptors, so parallel tests in the same binary
/// do not disturb each other's counts.
pub fn serial() -> MutexGuard<'static, ()> {
    super::lock_serial()
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
