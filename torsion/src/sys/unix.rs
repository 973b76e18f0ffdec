//! Unix-domain stream sockets: `sockaddr_un` for paths and Linux abstract names, SO_PEERCRED,
//! and descriptor passing (SCM_RIGHTS) with `sendmsg`/`recvmsg`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{cvt, owned, MAX_IOV};
use crate::interfaces::UnixAddress;

/// The most descriptors one SCM_RIGHTS message may carry on Linux (`SCM_MAX_FD`).
pub(crate) const SCM_MAX_FD: usize = 253;

/// Bytes of `sun_path` (108 on Linux).
fn sun_path_len() -> usize {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_path.len()
}

/// Offset of `sun_path` in `sockaddr_un`.
const PATH_OFFSET: usize = std::mem::offset_of!(libc::sockaddr_un, sun_path);

/// The `sockaddr_un` of `addr` and its length.
///
/// # Errors
/// `InvalidInput` for an unnamed address, a path with a NUL byte, an empty path, or a name
/// too long for `sun_path`.
pub(crate) fn sockaddr_un(addr: &UnixAddress) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let max = sun_path_len();
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let len = match addr {
        UnixAddress::Path(p) => {
            let bytes = p.as_os_str().as_bytes();
            if bytes.is_empty() {
                return Err(invalid("an empty Unix socket path".into()));
            }
            if bytes.contains(&0) {
                return Err(invalid("a Unix socket path with a NUL byte".into()));
            }
            // One byte kept for the terminating NUL.
            if bytes.len() >= max {
                return Err(invalid(format!(
                    "Unix socket path of {} bytes: at most {} fit",
                    bytes.len(),
                    max - 1
                )));
            }
            for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            PATH_OFFSET + bytes.len() + 1
        }
        UnixAddress::Abstract(name) => {
            if name.len() >= max {
                return Err(invalid(format!(
                    "abstract Unix socket name of {} bytes: at most {} fit",
                    name.len(),
                    max - 1
                )));
            }
            for (d, s) in sa.sun_path[1..].iter_mut().zip(name) {
                *d = *s as libc::c_char;
            }
            PATH_OFFSET + 1 + name.len()
        }
        UnixAddress::Unnamed => {
            return Err(invalid("an unnamed Unix socket address".into()));
        }
    };
    Ok((sa, len as libc::socklen_t))
}

/// Reads a `UnixAddress` back out of what the kernel filled (`len` bytes of it).
fn from_sockaddr_un(sa: &libc::sockaddr_un, len: libc::socklen_t) -> UnixAddress {
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_un>());
    if len <= PATH_OFFSET {
        return UnixAddress::Unnamed;
    }
    let path: Vec<u8> = sa.sun_path[..len - PATH_OFFSET]
        .iter()
        .map(|c| *c as u8)
        .collect();
    if path[0] == 0 {
        return UnixAddress::Abstract(path[1..].to_vec());
    }
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    UnixAddress::Path(PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])))
}

/// A non-blocking, close-on-exec Unix stream socket.
pub(crate) fn unix_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    Ok(owned(fd))
}

/// `bind(2)` to a Unix address.
pub(crate) fn unix_bind(fd: RawFd, addr: &UnixAddress) -> io::Result<()> {
    let (sa, len) = sockaddr_un(addr)?;
    // SAFETY: `sa` holds a valid address of length `len`.
    cvt(unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_un).cast(), len) })?;
    Ok(())
}

/// `connect(2)` to a Unix address: `Ok(true)` when connected, `Ok(false)` on EINPROGRESS.
/// A listener whose accept queue is full answers EAGAIN (returned as an error).
pub(crate) fn unix_connect(fd: RawFd, addr: &UnixAddress) -> io::Result<bool> {
    let (sa, len) = sockaddr_un(addr)?;
    // SAFETY: `sa` holds a valid address of length `len`.
    match cvt(unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `accept4(2)` on a Unix listener: a non-blocking, close-on-exec connection and its peer's
/// address (usually unnamed).
pub(crate) fn unix_accept(fd: RawFd) -> io::Result<(OwnedFd, UnixAddress)> {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `sa`/`len` are live and `len` is the size of `sa`.
    let c = cvt(unsafe {
        libc::accept4(
            fd,
            (&mut sa as *mut libc::sockaddr_un).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    let conn = owned(c);
    Ok((conn, from_sockaddr_un(&sa, len)))
}

/// `getsockname(2)` of a Unix socket.
pub(crate) fn unix_local_addr(fd: RawFd) -> io::Result<UnixAddress> {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `sa`/`len` are live and `len` is the size of `sa`.
    cvt(unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_un).cast(), &mut len) })?;
    Ok(from_sockaddr_un(&sa, len))
}

/// SO_PEERCRED: the peer's process id, user id and group id (as they were when it connected).
pub(crate) fn peer_credentials(fd: RawFd) -> io::Result<(i32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live and `len` holds the size of `cred`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// True when a process with this id exists (`kill(pid, 0)`: EPERM means it exists but is
/// not ours). Ids that do not fit a `pid_t`, and 0, exist nowhere.
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Room for the control message of [`SCM_MAX_FD`] descriptors, as `u64`s so that it is aligned
/// for `cmsghdr`.
const CONTROL_WORDS: usize = (SCM_MAX_FD * 4 + 64) / 8;

/// CMSG_SPACE: room for a control message of `payload` bytes.
fn cmsg_space(payload: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes on its integer argument.
    unsafe { libc::CMSG_SPACE(payload as libc::c_uint) as usize }
}

/// What one [`recv_with_fds`] got.
pub(crate) struct Received {
    /// Bytes read into the buffer (0: the end of the stream).
    pub(crate) len: usize,
    /// Descriptors that came with them (close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
    /// MSG_CTRUNC: the peer sent more descriptors than fit; the kernel closed the rest.
    pub(crate) truncated: bool,
}

/// `recvmsg(2)` into `buf`, taking at most `max_fds` descriptors passed with the bytes
/// (MSG_CMSG_CLOEXEC). Every descriptor received is returned owned, whatever else the control
/// data holds.
pub(crate) fn recv_with_fds(fd: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
    let max_fds = max_fds.clamp(1, SCM_MAX_FD);
    let mut control = [0u64; CONTROL_WORDS];
    let control_len = cmsg_space(max_fds * std::mem::size_of::<libc::c_int>());
    debug_assert!(control_len <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed means no name and no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    // SAFETY: `msg` points at one iovec over `buf` (writable, its length) and at `control`
    // (writable, at least `control_len` bytes, aligned for cmsghdr).
    let n = cvt(unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) })? as usize;
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay within
    // `msg_controllen` bytes of `control`, and each header's `cmsg_len` bounds its data.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let h = &*cmsg;
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = data.offset_from(cmsg.cast::<u8>()) as usize;
                let count = (h.cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    if raw >= 0 {
                        fds.push(owned(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len: n,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// `sendmsg(2)` of `bufs` (at most [`MAX_IOV`]) with `fds` in one SCM_RIGHTS control message,
/// MSG_NOSIGNAL. When it returns `Ok(n)` with `n > 0`, the descriptors went with the first
/// byte; on an error nothing was sent.
///
/// # Errors
/// `InvalidInput` for no bytes or more than [`SCM_MAX_FD`] descriptors; the system error.
pub(crate) fn send_with_fds(fd: RawFd, bufs: &[&[u8]], fds: &[OwnedFd]) -> io::Result<usize> {
    if fds.len() > SCM_MAX_FD || bufs.iter().all(|b| b.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors go with 1 to 253 per message and at least one byte",
        ));
    }
    let n = bufs.len().min(MAX_IOV);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    for (slot, b) in iov.iter_mut().zip(&bufs[..n]) {
        slot.iov_base = b.as_ptr() as *mut libc::c_void;
        slot.iov_len = b.len();
    }
    let mut control = [0u64; CONTROL_WORDS];
    let payload = fds.len() * std::mem::size_of::<libc::c_int>();
    let control_len = cmsg_space(payload);
    // SAFETY: msghdr is plain data; zeroed means no name and no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len as _;
        // SAFETY: `control` is aligned for cmsghdr and holds `control_len` bytes, room for one
        // header and `fds.len()` ints (CMSG_SPACE); CMSG_FIRSTHDR is then non-null.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), f.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at `n` iovecs over live, readable buffers and at the control data
    // built above; the kernel only reads them. The descriptors are open (owned by `fds`).
    cvt(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip_and_are_bounded() {
        let cases = [
            UnixAddress::Path(PathBuf::from("/tmp/a.sock")),
            UnixAddress::Path(PathBuf::from("x".repeat(107))),
            UnixAddress::Abstract(b"name".to_vec()),
            UnixAddress::Abstract(vec![b'n'; 107]),
            UnixAddress::Abstract(b"with\0nul".to_vec()),
            UnixAddress::Abstract(Vec::new()),
        ];
        for a in cases {
            let (sa, len) = sockaddr_un(&a).unwrap();
            assert_eq!(from_sockaddr_un(&sa, len), a);
        }
        for bad in [
            UnixAddress::Path(PathBuf::from("x".repeat(108))),
            UnixAddress::Path(PathBuf::new()),
            UnixAddress::Path(PathBuf::from("a\0b")),
            UnixAddress::Abstract(vec![b'n'; 108]),
            UnixAddress::Unnamed,
        ] {
            let e = sockaddr_un(&bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        // What the kernel reports for an unbound socket.
        // SAFETY: sockaddr_un is plain data; zeroed is valid.
        let sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let family = std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
        assert_eq!(from_sockaddr_un(&sa, family), UnixAddress::Unnamed);
    }

    #[test]
    fn descriptors_need_bytes_and_a_bounded_count() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let none: [OwnedFd; 0] = [];
        assert!(send_with_fds(fd, &[b""], &none).is_err());
        let many: Vec<OwnedFd> = (0..=SCM_MAX_FD)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let e = send_with_fds(fd, &[b"x"], &many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
