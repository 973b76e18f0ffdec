//! Datagram sockets (UDP and Unix `SOCK_DGRAM`): creation, Unix addresses, `sendto`, `recvmsg`
//! and `recvmmsg` with truncation detection, and the broadcast and multicast socket options.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{cvt, owned};
use crate::interfaces::{Address, UnixAddress};

/// The address family of a datagram socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DgramFamily {
    V4,
    V6,
    Unix,
}

/// A non-blocking, close-on-exec `SOCK_DGRAM` socket of `family`.
pub(crate) fn dgram_socket(family: DgramFamily) -> io::Result<OwnedFd> {
    let domain = match family {
        DgramFamily::V4 => libc::AF_INET,
        DgramFamily::V6 => libc::AF_INET6,
        DgramFamily::Unix => libc::AF_UNIX,
    };
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    Ok(owned(fd))
}

/// A socket address in the kernel's format, with its length.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn zeroed() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) value.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    /// Copies `value` to the start of the storage.
    fn put<T: Copy>(&mut self, value: T) {
        assert!(std::mem::size_of::<T>() <= std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: the storage is larger than `T` (checked above) and aligned for every sockaddr
        // type; `T` is plain data.
        unsafe { std::ptr::write(self.mut_ptr().cast::<T>(), value) };
        self.len = std::mem::size_of::<T>() as libc::socklen_t;
    }

    fn ip(addr: &SocketAddr) -> RawAddr {
        let mut raw = RawAddr::zeroed();
        match addr {
            SocketAddr::V4(a) => raw.put(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => raw.put(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
        raw
    }

    /// A `sockaddr_un`; `Unnamed` is the bare family, which `bind` turns into an automatic
    /// abstract name (Linux's autobind).
    fn unix(addr: &UnixAddress) -> io::Result<RawAddr> {
        // SAFETY: sockaddr_un is plain data; all-zero is valid.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let base = std::mem::size_of::<libc::sa_family_t>();
        let (bytes, lead): (&[u8], usize) = match addr {
            UnixAddress::Path(p) => (p.as_os_str().as_bytes(), 0),
            UnixAddress::Abstract(n) => (n.as_slice(), 1),
            UnixAddress::Unnamed => (&[], 0),
        };
        if let UnixAddress::Path(_) = addr {
            if bytes.is_empty() || bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a Unix socket path must be non-empty and hold no NUL byte",
                ));
            }
        }
        // A path keeps a terminating NUL; an abstract name starts with one.
        let room = sun.sun_path.len() - if lead == 0 { 1 } else { 0 };
        if lead + bytes.len() > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a Unix socket address holds at most {} bytes, not {}",
                    room - lead,
                    bytes.len()
                ),
            ));
        }
        for (slot, b) in sun.sun_path[lead..].iter_mut().zip(bytes) {
            *slot = *b as libc::c_char;
        }
        let mut raw = RawAddr::zeroed();
        raw.put(sun);
        raw.len = match addr {
            UnixAddress::Path(_) => base + bytes.len() + 1,
            UnixAddress::Abstract(_) => base + 1 + bytes.len(),
            UnixAddress::Unnamed => base,
        } as libc::socklen_t;
        Ok(raw)
    }

    fn of(addr: &Address) -> io::Result<RawAddr> {
        match addr {
            Address::Tcp(a) => Ok(RawAddr::ip(a)),
            Address::Unix(u) => RawAddr::unix(u),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a socket address"),
            )),
        }
    }

    /// The address the kernel wrote (`len` bytes of it).
    fn to_address(&self) -> io::Result<Address> {
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: &libc::sockaddr_in = unsafe { &*self.ptr().cast() };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Ok(Address::Tcp(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                ))))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: &libc::sockaddr_in6 = unsafe { &*self.ptr().cast() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                // A dual-stack socket's IPv4 peers are reported as IPv4 addresses.
                Ok(Address::Tcp(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        port,
                        sin6.sin6_flowinfo,
                        sin6.sin6_scope_id,
                    )),
                }))
            }
            libc::AF_UNIX => {
                // SAFETY: the family says the storage holds a sockaddr_un.
                let sun: &libc::sockaddr_un = unsafe { &*self.ptr().cast() };
                let base = std::mem::size_of::<libc::sa_family_t>();
                let n = (self.len as usize)
                    .saturating_sub(base)
                    .min(sun.sun_path.len());
                let bytes: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
                Ok(Address::Unix(match bytes.first() {
                    None => UnixAddress::Unnamed,
                    Some(0) => UnixAddress::Abstract(bytes[1..].to_vec()),
                    Some(_) => {
                        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                        UnixAddress::Path(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..end])))
                    }
                }))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown socket address family",
            )),
        }
    }
}

/// `bind(2)` to an IP or Unix address (`UnixAddress::Unnamed`: an automatic abstract name).
pub(crate) fn dgram_bind(fd: RawFd, addr: &Address) -> io::Result<()> {
    let raw = RawAddr::of(addr)?;
    // SAFETY: `raw` holds a valid address of length `raw.len`.
    cvt(unsafe { libc::bind(fd, raw.ptr(), raw.len) })?;
    Ok(())
}

/// `connect(2)` of a datagram socket (sets its default and only peer; never blocks). An
/// address that is not a socket address is refused with `InvalidInput`.
pub(crate) fn dgram_connect(fd: RawFd, addr: &Address) -> io::Result<()> {
    let raw = RawAddr::of(addr)?;
    // SAFETY: `raw` holds a valid address of length `raw.len`.
    cvt(unsafe { libc::connect(fd, raw.ptr(), raw.len) })?;
    Ok(())
}

/// `getsockname(2)` of a datagram socket of any family.
pub(crate) fn dgram_local_addr(fd: RawFd) -> io::Result<Address> {
    let mut raw = RawAddr::zeroed();
    // SAFETY: `raw.storage` and `raw.len` are live and `len` is the storage's size.
    cvt(unsafe { libc::getsockname(fd, raw.mut_ptr(), &mut raw.len) })?;
    raw.to_address()
}

/// `sendto(2)` (`to` = `None`: the connected peer) with MSG_NOSIGNAL.
pub(crate) fn send_to(fd: RawFd, data: &[u8], to: Option<&Address>) -> io::Result<usize> {
    let raw = to.map(RawAddr::of).transpose()?;
    let (p, len) = match &raw {
        Some(r) => (r.ptr(), r.len),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `data` is valid for reads of its length; `p` is null or a valid address of `len`
    // bytes.
    cvt(unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
            p,
            len,
        )
    })
    .map(|n| n as usize)
}

/// One received datagram's description.
#[derive(Debug)]
pub(crate) struct Received {
    /// The datagram's full length (larger than the slot when it was truncated).
    pub(crate) len: usize,
    /// The datagram did not fit its slot (MSG_TRUNC): only part of it was copied.
    pub(crate) truncated: bool,
    /// The sender.
    pub(crate) from: Address,
}

/// Buffers for receiving up to `slots` datagrams of up to `size` bytes in one system call.
pub(crate) struct RecvBatch {
    size: usize,
    buf: Vec<u8>,
    addrs: Vec<RawAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("size", &self.size)
            .field("slots", &self.addrs.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `slots` datagrams (at least 1) of `size` bytes (at least 1) each.
    pub(crate) fn new(slots: usize, size: usize) -> RecvBatch {
        let slots = slots.max(1);
        let size = size.max(1);
        RecvBatch {
            size,
            buf: vec![0; slots * size],
            addrs: (0..slots).map(|_| RawAddr::zeroed()).collect(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ],
            // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
            hdrs: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
        }
    }

    /// Datagrams one call can receive.
    pub(crate) fn slots(&self) -> usize {
        self.addrs.len()
    }

    /// Bytes per datagram slot.
    pub(crate) fn slot_size(&self) -> usize {
        self.size
    }

    /// The bytes of slot `i` that a receive filled (`len` of its [`Received`], capped at the
    /// slot's size).
    pub(crate) fn data(&self, i: usize, len: usize) -> &[u8] {
        let start = i * self.size;
        &self.buf[start..start + len.min(self.size)]
    }

    /// Points header `i` at its slot, its iovec and its address storage.
    fn prepare(&mut self, i: usize) {
        let start = i * self.size;
        self.iovs[i] = libc::iovec {
            iov_base: self.buf[start..].as_mut_ptr().cast(),
            iov_len: self.size,
        };
        self.addrs[i].len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let hdr = &mut self.hdrs[i];
        hdr.msg_len = 0;
        hdr.msg_hdr.msg_name = self.addrs[i].mut_ptr().cast();
        hdr.msg_hdr.msg_namelen = self.addrs[i].len;
        hdr.msg_hdr.msg_iov = &mut self.iovs[i];
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = std::ptr::null_mut();
        hdr.msg_hdr.msg_controllen = 0;
        hdr.msg_hdr.msg_flags = 0;
    }

    /// What the kernel wrote into header `i`.
    fn finish(&mut self, i: usize, len: usize) -> io::Result<Received> {
        let hdr = &self.hdrs[i];
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.size;
        self.addrs[i].len = hdr.msg_hdr.msg_namelen;
        // A Unix datagram from an unbound sender comes with no address at all (length 0),
        // leaving the storage as the previous datagram left it.
        let from = if self.addrs[i].len == 0 {
            Address::Unix(UnixAddress::Unnamed)
        } else {
            self.addrs[i].to_address()?
        };
        Ok(Received {
            len,
            truncated,
            from,
        })
    }

    /// Receives one datagram into slot 0 with `recvmsg(2)`.
    pub(crate) fn recv_one(&mut self, fd: RawFd) -> io::Result<Received> {
        self.prepare(0);
        // SAFETY: header 0 points at live buffers owned by `self` (slot 0, iovec 0, address
        // storage 0) of the sizes it states; nothing moves them during the call.
        let n = cvt(unsafe { libc::recvmsg(fd, &mut self.hdrs[0].msg_hdr, libc::MSG_TRUNC) })?;
        self.finish(0, n as usize)
    }

    /// Receives up to `max` datagrams (at most [`slots`](Self::slots)) with `recvmmsg(2)`,
    /// without waiting once the first has arrived; `out` gets their descriptions, in order.
    pub(crate) fn recv_many(
        &mut self,
        fd: RawFd,
        max: usize,
        out: &mut Vec<Received>,
    ) -> io::Result<usize> {
        let n = max.clamp(1, self.slots());
        for i in 0..n {
            self.prepare(i);
        }
        // SAFETY: the first `n` headers point at live buffers owned by `self` of the sizes they
        // state; nothing moves them during the call; no timeout is given.
        let got = cvt(unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        })? as usize;
        for i in 0..got.min(n) {
            let len = self.hdrs[i].msg_len as usize;
            let r = self.finish(i, len)?;
            out.push(r);
        }
        Ok(got)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live `T` and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` holds the size of `value`; the kernel
    // writes at most `len` bytes (options stored as a byte are zero-extended by the zeroed
    // initial value).
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

/// SO_REUSEPORT.
pub(crate) fn set_reuseport(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1 as &libc::c_int)
}

/// SO_BROADCAST.
pub(crate) fn set_broadcast(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        &(on as libc::c_int),
    )
}

/// SO_BROADCAST's current value.
pub(crate) fn broadcast(fd: RawFd) -> io::Result<bool> {
    Ok(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BROADCAST)? != 0)
}

/// Which interface a multicast option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum McastIf {
    /// The system's choice.
    Any,
    /// The IPv4 interface with this address.
    Addr(Ipv4Addr),
    /// The interface with this index.
    Index(u32),
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

fn mreqn(group: Ipv4Addr, iface: McastIf) -> io::Result<libc::ip_mreqn> {
    let (addr, index) = match iface {
        McastIf::Any => (Ipv4Addr::UNSPECIFIED, 0),
        McastIf::Addr(a) => (a, 0),
        McastIf::Index(i) => (Ipv4Addr::UNSPECIFIED, i),
    };
    Ok(libc::ip_mreqn {
        imr_multiaddr: in_addr(group),
        imr_address: in_addr(addr),
        imr_ifindex: libc::c_int::try_from(index).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?,
    })
}

fn v6_index(iface: McastIf) -> io::Result<libc::c_uint> {
    match iface {
        McastIf::Any => Ok(0),
        McastIf::Index(i) => Ok(i),
        McastIf::Addr(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an IPv6 multicast interface is named by its index, not an IPv4 address",
        )),
    }
}

/// IP_ADD_MEMBERSHIP / IPV6_ADD_MEMBERSHIP (`join`), or the DROP options.
pub(crate) fn membership(fd: RawFd, group: IpAddr, iface: McastIf, join: bool) -> io::Result<()> {
    match group {
        IpAddr::V4(g) => {
            let name = if join {
                libc::IP_ADD_MEMBERSHIP
            } else {
                libc::IP_DROP_MEMBERSHIP
            };
            setsockopt(fd, libc::IPPROTO_IP, name, &mreqn(g, iface)?)
        }
        IpAddr::V6(g) => {
            let name = if join {
                libc::IPV6_ADD_MEMBERSHIP
            } else {
                libc::IPV6_DROP_MEMBERSHIP
            };
            let req = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: g.octets(),
                },
                ipv6mr_interface: v6_index(iface)?,
            };
            setsockopt(fd, libc::IPPROTO_IPV6, name, &req)
        }
    }
}

/// IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS.
pub(crate) fn set_multicast_ttl(fd: RawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &v)
    }
}

/// The multicast TTL (hop limit).
pub(crate) fn multicast_ttl(fd: RawFd, v6: bool) -> io::Result<u8> {
    let v = if v6 {
        getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS)?
    } else {
        getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL)?
    };
    Ok(v.clamp(0, 255) as u8)
}

/// IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP.
pub(crate) fn set_multicast_loop(fd: RawFd, v6: bool, on: bool) -> io::Result<()> {
    let v = on as libc::c_int;
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &v)
    }
}

/// The multicast loopback flag.
pub(crate) fn multicast_loop(fd: RawFd, v6: bool) -> io::Result<bool> {
    let v = if v6 {
        getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP)?
    } else {
        getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP)?
    };
    Ok(v != 0)
}

/// IP_MULTICAST_IF / IPV6_MULTICAST_IF: the interface outgoing multicast leaves by.
pub(crate) fn set_multicast_if(fd: RawFd, v6: bool, iface: McastIf) -> io::Result<()> {
    if v6 {
        let i = v6_index(iface)? as libc::c_int;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &i)
    } else {
        let req = mreqn(Ipv4Addr::UNSPECIFIED, iface)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &req)
    }
}

/// The index of the network interface called `name` (`if_nametoindex(3)`).
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an interface name holds no NUL byte",
        )
    })?;
    // SAFETY: `c` is a live NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// EMSGSIZE.
pub(crate) fn is_msg_size(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMSGSIZE)
}

/// ENOBUFS (a full device queue: the datagram was not sent).
pub(crate) fn is_no_buffers(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}
