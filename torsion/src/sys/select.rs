//! select(2): a checked `fd_set` and `pselect`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{cvt, timespec};

/// `FD_SETSIZE`: select(2) cannot watch a descriptor at or above this number.
pub(crate) const FD_SETSIZE: RawFd = libc::FD_SETSIZE as RawFd;

/// A checked `fd_set`: every descriptor is range-checked before it touches the bit array.
#[derive(Clone, Copy)]
pub(crate) struct FdSet(libc::fd_set);

impl FdSet {
    pub(crate) fn new() -> FdSet {
        // SAFETY: fd_set is a plain bit array; all-zero is the empty set (what FD_ZERO writes).
        FdSet(unsafe { std::mem::zeroed() })
    }

    /// Adds `fd`; panics never: out-of-range descriptors are refused at registration and
    /// ignored here defensively.
    pub(crate) fn insert(&mut self, fd: RawFd) {
        if (0..FD_SETSIZE).contains(&fd) {
            // SAFETY: `fd` is within [0, FD_SETSIZE), the bounds of the set.
            unsafe { libc::FD_SET(fd, &mut self.0) }
        }
    }

    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: `fd` is within [0, FD_SETSIZE), the bounds of the set.
        (0..FD_SETSIZE).contains(&fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

/// `pselect(2)` over read and write sets with a nanosecond timeout.
pub(crate) fn pselect(
    nfds: RawFd,
    read: &mut FdSet,
    write: &mut FdSet,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let nfds = nfds.clamp(0, FD_SETSIZE);
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the sets are valid fd_sets and `nfds` is at most FD_SETSIZE; `ts_ptr` is null or
    // points to a live timespec; a null sigmask leaves the mask alone.
    let n = cvt(unsafe {
        libc::pselect(
            nfds,
            &mut read.0,
            &mut write.0,
            std::ptr::null_mut(),
            ts_ptr,
            std::ptr::null(),
        )
    })?;
    Ok(n as usize)
}
