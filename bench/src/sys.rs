//! Thin wrappers over the socket and epoll syscalls, on raw descriptors (`i32`), for the load
//! generator and the raw epoll server. Each wrapper turns `-1` into `io::Error` and does nothing
//! else, so that the hot loops cost exactly one syscall per call.
//!
//! A few of these (setsockopt, SO_LINGER, RLIMIT_NOFILE, the epoll calls) duplicate helpers of
//! torsion's private `sys` module on purpose: the benchmark peers (the raw epoll server, the
//! load generator) must not depend on torsion's internals, or a change to torsion would change
//! the yardstick it is measured with.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
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

/// Raises the soft limit on open descriptors to the hard limit (idle and 1,000-connection runs
/// need more than the usual 1,024). Returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

fn sockaddr_loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A non-blocking TCP listener on 127.0.0.1:`port` with `SO_REUSEADDR`.
pub fn listen_loopback(port: u16, backlog: i32) -> io::Result<RawFd> {
    let fd = tcp_socket()?;
    let r = (|| {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        let addr = sockaddr_loopback(port);
        // SAFETY: `addr` is a valid sockaddr_in of the given length.
        cvt(unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            )
        })?;
        // SAFETY: plain syscall on a descriptor we own.
        cvt(unsafe { libc::listen(fd, backlog) })?;
        Ok(fd)
    })();
    if r.is_err() {
        close(fd);
    }
    r
}

/// [`listen_loopback`] as a `std::net::TcpListener` (non-blocking), for runtimes that take one.
pub fn std_listener(port: u16, backlog: i32) -> io::Result<std::net::TcpListener> {
    let fd = listen_loopback(port, backlog)?;
    // SAFETY: `fd` is a fresh listening socket that nothing else owns.
    Ok(unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A new non-blocking, close-on-exec IPv4 TCP socket.
pub fn tcp_socket() -> io::Result<RawFd> {
    // SAFETY: plain syscall with constant arguments.
    cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
}

/// Starts connecting `fd` to 127.0.0.1:`port`. On a non-blocking socket this usually fails
/// with `EINPROGRESS` (see [`is_in_progress`]).
pub fn connect_loopback(fd: RawFd, port: u16) -> io::Result<()> {
    let addr = sockaddr_loopback(port);
    // SAFETY: `addr` is a valid sockaddr_in of the given length.
    cvt(unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            SOCKADDR_IN_LEN,
        )
    })
    .map(drop)
}

/// Whether `e` is a non-blocking connect still under way.
pub fn is_in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS)
}

/// Connects to 127.0.0.1:`port` blocking (with a timeout), then returns the descriptor in
/// non-blocking mode.
pub fn connect_blocking(port: u16, timeout: Duration) -> io::Result<RawFd> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nonblocking(true)?;
    Ok(s.into_raw_fd())
}

/// Accepts one connection as a non-blocking, close-on-exec descriptor.
#[inline]
pub fn accept(listener: RawFd) -> io::Result<RawFd> {
    // SAFETY: null address pointers are allowed by accept4.
    cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })
}

/// One `read(2)`.
#[inline]
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a valid writable buffer.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// One `write(2)`.
#[inline]
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a valid readable buffer.
    cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// Closes `fd`, ignoring errors.
#[inline]
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe {
        libc::close(fd);
    }
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int of the given length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets `TCP_NODELAY`.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Sets `SO_LINGER` to zero, so that `close` sends an RST instead of a FIN.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a valid linger struct of the given length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The pending error of a socket (`SO_ERROR`), for a finished non-blocking connect.
pub fn take_socket_error(fd: RawFd) -> io::Result<()> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    })?;
    if v == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(v))
    }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: RawFd,
}

/// An epoll event (`struct epoll_event`).
pub type EpollEvent = libc::epoll_event;

/// Readable.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
/// Error.
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
/// Hang-up.
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
/// Edge-triggered.
pub const EPOLLET: u32 = libc::EPOLLET as u32;

/// A zeroed event array for [`Epoll::wait`].
pub fn event_buffer(n: usize) -> Vec<EpollEvent> {
    vec![EpollEvent { events: 0, u64: 0 }; n]
}

impl Epoll {
    /// A new close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = EpollEvent { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event.
        cvt(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) }).map(drop)
    }

    /// `EPOLL_CTL_ADD`.
    #[inline]
    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// `EPOLL_CTL_MOD`.
    #[inline]
    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    /// `EPOLL_CTL_DEL`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events; `timeout_ms < 0` waits forever. `EINTR` is reported as zero events.
    #[inline]
    pub fn wait(&self, events: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a valid writable array of `max` events.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// Whether `e` means "try again later".
#[inline]
pub fn would_block(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAGAIN)
}

/// This process's CPU time (all threads, user and system).
pub fn own_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Another process's CPU time (all its threads, user and system) in nanoseconds, through its
/// CPU-time clock (`clock_getcpuclockid`). `None` when the kernel refuses.
pub fn process_cpu_clock(pid: i32) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is valid and writable.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Clock ticks per second for `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: plain sysconf query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
