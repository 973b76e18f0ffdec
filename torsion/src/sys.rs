//! The only module with `unsafe` code: thin, checked wrappers over the system calls torsion uses.
//!
//! Every function here validates what the kernel could misuse (buffer lengths, descriptor
//! ranges) and turns `-1` returns into `io::Error`s. Nothing above this module calls libc
//! directly.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turns a `-1` return into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Wraps a descriptor the kernel just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall that creates a descriptor, so it is
    // open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A `timespec` for a timeout, saturating instead of overflowing.
fn timespec(d: Duration) -> libc::timespec {
    let secs = d.as_secs().min(i64::MAX as u64 / 2) as libc::time_t;
    libc::timespec {
        tv_sec: secs,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd: the reactor's waker.

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
    match cvt_size(r) {
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
    match cvt_size(r) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// epoll.

pub(crate) use libc::epoll_event as EpollEvent;
pub(crate) use libc::{EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP};
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
        match cvt_long(r) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => *use_pwait2 = false,
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

// ---------------------------------------------------------------------------------------------
// poll.

pub(crate) use libc::pollfd as PollFd;
pub(crate) use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP};

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
pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> PollFd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// select.

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

// ---------------------------------------------------------------------------------------------
// Plain descriptors.

/// A non-blocking, close-on-exec pipe: (read end, write end).
#[allow(dead_code)] // used by the transports
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// `read(2)` into `buf`.
#[allow(dead_code)] // used by the transports
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write(2)` from `buf`.
#[allow(dead_code)] // used by the transports
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// Sets or clears O_NONBLOCK.
#[allow(dead_code)] // used by the transports
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL takes and returns plain integers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process and thread facts, for the testing kit.

/// CPU time (user + system) used by the calling thread.
pub(crate) fn thread_cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is plain data; zeroed is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live rusage the kernel fills in.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) })?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// A thread that signals can be sent to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadId(libc::pthread_t);

/// The calling thread.
pub(crate) fn current_thread() -> ThreadId {
    // SAFETY: pthread_self has no preconditions.
    ThreadId(unsafe { libc::pthread_self() })
}

/// Sends `sig` to `thread`. The caller keeps `thread` alive (joining it later).
pub(crate) fn signal_thread(thread: ThreadId, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pthread_kill on a thread id; the caller guarantees the thread has not been joined.
    let r = unsafe { libc::pthread_kill(thread.0, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs a handler that does nothing for `sig`, *without* SA_RESTART, so that blocking
/// system calls in the process see EINTR when the signal arrives.
pub(crate) fn install_noop_handler(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed means no flags and an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as usize;
    // SAFETY: `sa.sa_mask` is a live sigset_t.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: `sa` is a valid sigaction whose handler is async-signal-safe (it does nothing).
    cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    Ok(())
}
