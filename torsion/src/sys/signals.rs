//! Signals as events: one handler for every signal torsion catches, which records the signal in
//! a process-wide bit set and wakes the reactor through a process-wide eventfd (the self-pipe
//! trick). The reactor reads the set on its loop ([`take_pending`]) and runs the user's
//! callbacks there, never in signal context. The stop signals (SIGINT, SIGTERM) of a running
//! reactor go through the same handler; a second stop signal ends the process at once.
//!
//! The handler only does async-signal-safe things: atomic operations, a `write` to the eventfd
//! (made once, never closed, so the handler never writes to a closed or reused descriptor) and,
//! for a second stop signal, `_exit`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use super::cvt;

/// Signals 1..=64 (Linux's SIGRTMAX is 64).
pub(crate) const MAX_SIGNAL: i32 = 64;

/// The eventfd the handler writes to (-1 until made).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The eventfd itself, kept for the life of the process.
static FD: OnceLock<OwnedFd> = OnceLock::new();
/// Bit `n - 1` set: signal `n` arrived since the last [`take_pending`].
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Bit `n - 1` set: signal `n` is a stop signal (a second one exits at once).
static STOP_MODE: AtomicU64 = AtomicU64::new(0);
/// Stop signals received since the stop mode was last armed.
static STOPS: AtomicU32 = AtomicU32::new(0);

/// How each caught signal is caught: 0 = not by torsion.
static CAUGHT: [AtomicU8; MAX_SIGNAL as usize + 1] = [const { AtomicU8::new(0) }; 65];

/// The actions that were in place before torsion caught each signal.
static SAVED: Mutex<Vec<Option<SavedAction>>> = Mutex::new(Vec::new());

struct SavedAction(libc::sigaction);
// SAFETY: a sigaction is plain data (a handler address, a mask and flags).
unsafe impl Send for SavedAction {}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

extern "C" fn on_signal(sig: libc::c_int) {
    if !(1..=MAX_SIGNAL).contains(&sig) {
        return;
    }
    if STOP_MODE.load(Ordering::SeqCst) & bit(sig) != 0 && STOPS.fetch_add(1, Ordering::SeqCst) >= 1
    {
        // The second stop signal: the user does not want to wait for the shutdown.
        // SAFETY: _exit is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(128 + sig) };
    }
    PENDING.fetch_or(bit(sig), Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: `fd` is the process-wide eventfd, never closed; `one` is 8 readable bytes.
        // write(2) is async-signal-safe; its result is ignored (a full counter still wakes).
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The eventfd that caught signals make readable (made on first use, never closed).
pub(crate) fn signal_fd() -> io::Result<RawFd> {
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

/// Catches `sig` with torsion's handler (saving the action in place, put back by
/// [`release`]). Catching a signal that is caught already changes nothing.
///
/// # Errors
/// `EINVAL` for a signal out of range or one that cannot be caught (SIGKILL, SIGSTOP).
pub(crate) fn catch(sig: i32) -> io::Result<()> {
    if !(1..=MAX_SIGNAL).contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return Err(super::errno(libc::EINVAL));
    }
    signal_fd()?;
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if saved.is_empty() {
        saved.resize_with(MAX_SIGNAL as usize + 1, || None);
    }
    if CAUGHT[sig as usize].load(Ordering::SeqCst) != 0 {
        return Ok(());
    }
    // SAFETY: sigaction is plain data; zeroed means no flags and an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a live sigset_t.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: sigaction is plain data.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `sa` is a valid sigaction whose handler is async-signal-safe (see `on_signal`);
    // `old` is a live sigaction to receive the previous one.
    cvt(unsafe { libc::sigaction(sig, &sa, &mut old) })?;
    saved[sig as usize] = Some(SavedAction(old));
    CAUGHT[sig as usize].store(1, Ordering::SeqCst);
    Ok(())
}

/// Puts back the action that was in place before [`catch`]; a signal still pending is
/// dropped.
pub(crate) fn release(sig: i32) {
    if !(1..=MAX_SIGNAL).contains(&sig) {
        return;
    }
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if CAUGHT[sig as usize].swap(0, Ordering::SeqCst) == 0 {
        return;
    }
    if let Some(SavedAction(old)) = saved.get_mut(sig as usize).and_then(Option::take) {
        // SAFETY: `old` is the sigaction the kernel gave back for `sig`.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
    PENDING.fetch_and(!bit(sig), Ordering::SeqCst);
}

/// Marks `sig` as a stop signal (`on`: a second one while armed exits the process) or not.
pub(crate) fn set_stop_mode(sig: i32, on: bool) {
    if (1..=MAX_SIGNAL).contains(&sig) {
        if on {
            STOP_MODE.fetch_or(bit(sig), Ordering::SeqCst);
        } else {
            STOP_MODE.fetch_and(!bit(sig), Ordering::SeqCst);
        }
    }
}

/// Re-arms the stop count (the next stop signal is a "first" one).
pub(crate) fn reset_stops() {
    STOPS.store(0, Ordering::SeqCst);
}

/// Drains the eventfd and returns the signals that arrived since the last call (bit `n - 1`
/// for signal `n`).
pub(crate) fn take_pending() -> u64 {
    if let Some(fd) = FD.get() {
        let _ = super::eventfd_drain(fd.as_raw_fd());
    }
    PENDING.swap(0, Ordering::SeqCst)
}

/// Sends `sig` to this process (as `raise` in a single-threaded program: any thread that does
/// not block it takes it).
pub(crate) fn raise_to_process(sig: i32) -> io::Result<()> {
    // SAFETY: plain syscalls with int arguments.
    cvt(unsafe { libc::kill(libc::getpid(), sig) }).map(drop)
}
