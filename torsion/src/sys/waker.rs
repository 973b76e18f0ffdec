//! eventfd: the reactor's waker.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use super::{cvt, owned};

/// A non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant flags; the result is checked.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Adds one to an eventfd counter. A saturated counter (EAGAIN) already means "wake up".
pub(crate) fn eventfd_signal(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64.
    let r = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    match cvt(r) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resets an eventfd counter to zero; EAGAIN (already zero) is fine.
pub(crate) fn eventfd_drain(fd: RawFd) -> io::Result<()> {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local u64.
    let r = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    match cvt(r) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}
