//! Sockets: creation, addresses, socket options, connect/accept, send/recv, shutdown, and the
//! error classes the transports act on.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{OwnedFd, RawFd};

use super::{cvt, owned};

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
    super::counters::add_accepted();
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
    cvt(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) })
        .map(|n| n as usize)
        .inspect(|&n| super::counters::add_read(n))
}

/// `send(2)` with MSG_NOSIGNAL: a vanished peer is EPIPE, never SIGPIPE.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
        .map(|n| n as usize)
        .inspect(|&n| super::counters::add_written(n))
}

/// `send(2)` of urgent (out-of-band) data, for the tests of edge-triggered reading.
#[cfg(test)]
pub(crate) fn send_urgent(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_OOB) })
        .map(|n| n as usize)
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
    cvt(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
        .map(|n| n as usize)
        .inspect(|&n| super::counters::add_written(n))
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
