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
        match cvt_long(r) {
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

/// True when `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid fd is reported as EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
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

/// Sends `sig` to `thread`. Only called by `testing::signal_storm`, whose target thread is
/// blocked inside the same `thread::scope` and so cannot have exited.
pub(crate) fn signal_thread(thread: ThreadId, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: `thread` is alive (see above), so its pthread_t is valid for pthread_kill.
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

// ---------------------------------------------------------------------------------------------
// Sockets.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A `sockaddr_storage` filled from a `SocketAddr`, with its length.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Reads a `SocketAddr` back out of a `sockaddr_storage` the kernel filled.
fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IP socket address",
        )),
    }
}

/// A non-blocking, close-on-exec TCP socket for `addr`'s family.
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    Ok(owned(fd))
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` holds the size of `value`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// SO_REUSEADDR.
pub(crate) fn set_reuseaddr(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
}

/// IPV6_V6ONLY.
pub(crate) fn set_v6only(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, on as libc::c_int)
}

/// TCP_NODELAY.
pub(crate) fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as libc::c_int)
}

/// TCP_NODELAY's current value.
pub(crate) fn nodelay(fd: RawFd) -> io::Result<bool> {
    Ok(getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
}

/// SO_KEEPALIVE.
pub(crate) fn set_keepalive(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, on as libc::c_int)
}

/// SO_KEEPALIVE's current value.
pub(crate) fn keepalive(fd: RawFd) -> io::Result<bool> {
    Ok(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0)
}

/// SO_RCVBUF.
pub(crate) fn set_recv_buffer(fd: RawFd, size: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        size.min(i32::MAX as usize) as libc::c_int,
    )
}

/// SO_SNDBUF.
pub(crate) fn set_send_buffer(fd: RawFd, size: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        size.min(i32::MAX as usize) as libc::c_int,
    )
}

/// SO_LINGER with a zero timeout: `close` then sends RST and discards unsent data.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a pointer to a live linger and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// SO_ERROR: the pending socket error (clears it).
pub(crate) fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let e = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
}

/// `bind(2)`.
pub(crate) fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of length `len`.
    cvt(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

/// `listen(2)`.
pub(crate) fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall on integers.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}

/// `connect(2)`; a non-blocking socket answers EINPROGRESS, returned as `Ok(false)`.
pub(crate) fn connect(fd: RawFd, addr: &SocketAddr) -> io::Result<bool> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of length `len`.
    match cvt(unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `accept4(2)`: a non-blocking, close-on-exec connection and its peer, in one system call.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage`/`len` are live and `len` is the storage's size.
    let c = cvt(unsafe {
        libc::accept4(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    let conn = owned(c);
    let peer = from_sockaddr(&storage)?;
    Ok((conn, peer))
}

fn name_of(fd: RawFd, peer: bool) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut storage as *mut libc::sockaddr_storage).cast();
    // SAFETY: `storage`/`len` are live and `len` is the storage's size.
    cvt(unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    })?;
    from_sockaddr(&storage)
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, false)
}

/// `getpeername(2)`.
pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, true)
}

/// `recv(2)` into `buf`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) })
}

/// `send(2)` with MSG_NOSIGNAL: a vanished peer is EPIPE, never SIGPIPE.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// `send(2)` of urgent (out-of-band) data, for the tests of edge-triggered reading.
#[cfg(test)]
pub(crate) fn send_urgent(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_OOB) })
}

/// Most buffers one vectored send takes.
pub(crate) const MAX_IOV: usize = 64;

/// `sendmsg(2)` of several buffers with MSG_NOSIGNAL.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let n = bufs.len().min(MAX_IOV);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    for (slot, b) in iov.iter_mut().zip(&bufs[..n]) {
        slot.iov_base = b.as_ptr() as *mut libc::c_void;
        slot.iov_len = b.len();
    }
    // SAFETY: msghdr is plain data; zeroed means no name and no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // SAFETY: `msg` points at `n` iovecs describing live, readable buffers; the kernel only
    // reads them.
    cvt_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

/// Which direction `shutdown(2)` closes.
#[derive(Clone, Copy)]
pub(crate) enum Shut {
    Write,
}

/// `shutdown(2)`.
pub(crate) fn shutdown(fd: RawFd, how: Shut) -> io::Result<()> {
    let how = match how {
        Shut::Write => libc::SHUT_WR,
    };
    // SAFETY: plain syscall on integers.
    cvt(unsafe { libc::shutdown(fd, how) })?;
    Ok(())
}

/// True for the errors that mean "too many open files" (process or system limit).
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// True for ECONNABORTED/EPROTO etc.: a connection that died in the accept queue.
pub(crate) fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM) | Some(libc::EINTR)
    )
}

/// ECONNREFUSED.
pub(crate) fn is_refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// Lowers or raises this process's RLIMIT_NOFILE soft limit (for the testing kit).
pub(crate) fn set_nofile_limit(soft: u64) -> io::Result<()> {
    // SAFETY: rlimit is plain data.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a live rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    r.rlim_cur = soft.min(r.rlim_max);
    // SAFETY: `r` is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(())
}

/// Restores SIGPIPE's default action (kill the process), as some host programs do.
pub(crate) fn default_sigpipe() -> io::Result<()> {
    // SAFETY: setting a standard disposition for a standard signal.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// EBADF: a descriptor number that is not open (or is negative).
pub(crate) const EBADF: i32 = libc::EBADF;
/// EEXIST: a descriptor number already registered.
pub(crate) const EEXIST: i32 = libc::EEXIST;

/// The `io::Error` of an errno value.
pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}
