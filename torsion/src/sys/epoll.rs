//! epoll(7).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{cvt, owned, timespec};

pub(crate) use libc::epoll_event as EpollEvent;
pub(crate) use libc::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP};
pub(crate) use libc::{EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD};

/// A new close-on-exec epoll instance.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    Ok(owned(fd))
}

/// `epoll_ctl(2)`; `events`/`data` are ignored for `EPOLL_CTL_DEL`.
pub(crate) fn epoll_ctl(
    ep: &OwnedFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event that outlives the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) })?;
    Ok(())
}

/// A zeroed event buffer of `n` entries.
pub(crate) fn epoll_events(n: usize) -> Vec<EpollEvent> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

/// Data of one returned event.
pub(crate) fn epoll_event_parts(ev: &EpollEvent) -> (u32, u64) {
    (ev.events, ev.u64)
}

/// Waits for events. Uses `epoll_pwait2` (nanosecond timeout) when the kernel has it, else
/// `epoll_wait` with the timeout rounded *up* to whole milliseconds (never early).
/// `use_pwait2` is cleared the first time the kernel answers ENOSYS.
pub(crate) fn epoll_wait(
    ep: &OwnedFd,
    buf: &mut [EpollEvent],
    timeout: Option<Duration>,
    use_pwait2: &mut bool,
) -> io::Result<usize> {
    let max = buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
    if *use_pwait2 {
        let ts = timeout.map(timespec);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `buf` has room for `max` events; `ts_ptr` is null or points to a live
        // timespec; a null sigmask means "don't change the mask".
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                ep.as_raw_fd(),
                buf.as_mut_ptr(),
                max,
                ts_ptr,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        match cvt(r) {
            Ok(n) => return Ok(n as usize),
            // ENOSYS: an old kernel; EPERM: a seccomp filter that does not know the call.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                *use_pwait2 = false
            }
            Err(e) => return Err(e),
        }
    }
    let ms = match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    };
    // SAFETY: `buf` has room for `max` events.
    let n = cvt(unsafe { libc::epoll_wait(ep.as_raw_fd(), buf.as_mut_ptr(), max, ms) })?;
    Ok(n as usize)
}
