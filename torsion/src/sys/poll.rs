//! poll(2).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{cvt, timespec};

pub(crate) use libc::pollfd as PollFd;
pub(crate) use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP};

/// The `events`/`revents` bits of a [`PollFd`].
pub(crate) type PollEvents = libc::c_short;

/// `ppoll(2)` with a nanosecond timeout (`None` waits forever).
pub(crate) fn ppoll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid slice of pollfd of the given length; `ts_ptr` is null or live.
    let n = cvt(unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    })?;
    Ok(n as usize)
}

/// A `pollfd` entry.
pub(crate) fn pollfd(fd: RawFd, events: PollEvents) -> PollFd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
