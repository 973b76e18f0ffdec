//! Stop signals (SIGINT, SIGTERM): a handler that wakes the reactor through a process-wide
//! eventfd, and exits at once on the second signal.
//!
//! The handler only does async-signal-safe things: an atomic add, a `write` to the eventfd
//! (made once, never closed, so the handler never writes to a closed or reused descriptor) and,
//! for a second signal, `_exit`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;

use super::cvt;

/// The eventfd the handler writes to (-1 until made).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Stop signals received since the handlers were installed.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// The last signal received.
static LAST: AtomicI32 = AtomicI32::new(0);
/// The eventfd itself, kept for the life of the process.
static FD: OnceLock<OwnedFd> = OnceLock::new();

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_stop_signal(sig: libc::c_int) {
    LAST.store(sig, Ordering::SeqCst);
    if RECEIVED.fetch_add(1, Ordering::SeqCst) >= 1 {
        // The second stop signal: the user does not want to wait for the shutdown.
        // SAFETY: _exit is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(128 + sig) };
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: `fd` is the process-wide eventfd, never closed; `one` is 8 readable bytes.
        // write(2) is async-signal-safe; its result is ignored (a full counter still wakes).
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The handlers that were in place before ours, restored by [`restore`].
pub(crate) struct Saved {
    old: [libc::sigaction; 2],
}

/// The eventfd that stop signals make readable (made on first use, never closed).
pub(crate) fn stop_signal_fd() -> io::Result<RawFd> {
    if let Some(fd) = FD.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = super::eventfd()?;
    let raw = fd.as_raw_fd();
    match FD.set(fd) {
        Ok(()) => {
            WAKE_FD.store(raw, Ordering::SeqCst);
            Ok(raw)
        }
        // Another thread made one first: ours is closed, theirs is used.
        Err(_) => Ok(FD.get().expect("set").as_raw_fd()),
    }
}

/// Installs the stop handlers for SIGINT and SIGTERM.
pub(crate) fn install() -> io::Result<Saved> {
    stop_signal_fd()?;
    RECEIVED.store(0, Ordering::SeqCst);
    // SAFETY: sigaction is plain data; zeroed means no flags and an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a live sigset_t.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: sigaction is plain data.
    let mut old: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };
    for (i, sig) in STOP_SIGNALS.into_iter().enumerate() {
        // SAFETY: `sa` is a valid sigaction whose handler is async-signal-safe (see
        // `on_stop_signal`); `old[i]` is a live sigaction to receive the previous one.
        if let Err(e) = cvt(unsafe { libc::sigaction(sig, &sa, &mut old[i]) }) {
            restore(Saved { old });
            return Err(e);
        }
    }
    Ok(Saved { old })
}

/// Puts back the handlers that were in place before [`install`].
pub(crate) fn restore(saved: Saved) {
    for (i, sig) in STOP_SIGNALS.into_iter().enumerate() {
        // SAFETY: `saved.old[i]` is the sigaction the kernel gave back for `sig`.
        unsafe { libc::sigaction(sig, &saved.old[i], std::ptr::null_mut()) };
    }
}

/// Drains the stop-signal eventfd; returns the last stop signal received, if any arrived.
pub(crate) fn take_stop_signal() -> Option<i32> {
    if let Some(fd) = FD.get() {
        let _ = super::eventfd_drain(fd.as_raw_fd());
    }
    (RECEIVED.load(Ordering::SeqCst) > 0).then(|| LAST.load(Ordering::SeqCst))
}
