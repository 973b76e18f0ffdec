//! The only module with `unsafe` code: thin, checked wrappers over the system calls torsion uses.
//!
//! Every function here validates what the kernel could misuse (buffer lengths, descriptor
//! ranges) and turns `-1` returns into `io::Error`s. Nothing above this module calls libc
//! directly. One submodule per kind of system object ([`waker`] for the eventfd, [`epoll`],
//! [`poll`], [`select`], [`socket`]), and `test_support` for the process-global knobs of
//! torsion's own tests (with the `testing` feature); everything is re-exported here, so callers
//! write `sys::send`, `sys::epoll_ctl` and so on.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

mod affinity;
mod counters;
mod epoll;
mod poll;
mod process;
mod select;
mod signals;
mod socket;
#[cfg(any(test, feature = "testing"))]
mod test_support;
mod udp;
mod unix;
pub(crate) mod uring;
mod waker;

pub(crate) use affinity::{allowed_cpus, pin_current_thread};
pub(crate) use counters::io_totals;
pub(crate) use epoll::{
    epoll_create, epoll_ctl, epoll_event_parts, epoll_events, epoll_wait, EpollEvent,
};
pub(crate) use epoll::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP};
pub(crate) use epoll::{EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD};
pub(crate) use poll::{pollfd, ppoll, PollEvents, PollFd};
pub(crate) use poll::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP};
pub(crate) use process::{
    child_pids, is_executable, is_regular_file, kill_pid, pidfd_open, pidfd_send_signal,
    pipe_cloexec, read_fd, set_nonblocking, set_status_flags, spawn, try_wait, wait_blocking,
    write_fd, writev_fd, SpawnPlan, SpawnStage, WaitStatus,
};
pub(crate) use select::{pselect, FdSet, FD_SETSIZE};
pub(crate) use signals::{
    catch as catch_signal, raise_to_process, release as release_signal, reset_stops, set_stop_mode,
    signal_fd, take_pending as take_pending_signals, MAX_SIGNAL,
};
#[cfg(test)]
pub(crate) use socket::send_urgent;
pub(crate) use socket::{
    accept, bind, connect, is_fd_exhaustion, is_refused, is_transient_accept_error, keepalive,
    listen, local_addr, nodelay, peer_addr, recv, send, send_vectored, set_keepalive,
    set_linger_zero, set_nodelay, set_recv_buffer, set_reuseaddr, set_send_buffer, set_v6only,
    shutdown, take_socket_error, tcp_socket, Shut, MAX_IOV,
};
#[cfg(any(test, feature = "testing"))]
pub(crate) use test_support::{
    current_thread, default_sigpipe, install_noop_handler, kill, set_nofile_limit, signal_thread,
    thread_cpu_time,
};
#[cfg(test)]
pub(crate) use test_support::{pipe, write};
pub(crate) use udp::{
    broadcast, dgram_bind, dgram_connect, dgram_local_addr, dgram_socket, interface_index,
    is_msg_size, is_no_buffers, membership, multicast_loop, multicast_ttl, send_to, set_broadcast,
    set_multicast_if, set_multicast_loop, set_multicast_ttl, set_reuseport, DgramFamily, McastIf,
    Received, RecvBatch,
};
pub(crate) use unix::{
    peer_credentials, process_exists, recv_with_fds, send_with_fds, sockaddr_un, unix_accept,
    unix_bind, unix_connect, unix_local_addr, unix_socket, SCM_MAX_FD,
};
pub(crate) use uring::probe as uring_probe;
#[cfg(any(test, feature = "testing"))]
pub(crate) use uring::simulate_uring_refusal;
#[cfg(any(test, feature = "testing"))]
pub(crate) use uring::{set_buffer_ring, simulate_buffer_ring_refusal};
pub(crate) use waker::{eventfd, eventfd_drain, eventfd_signal};

/// A system call's return type whose `-1` means "failed, see `errno`".
trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => {
        $(impl IsMinusOne for $t {
            fn is_minus_one(self) -> bool {
                self == -1
            }
        })*
    };
}

// `c_int`, `c_long` (`syscall(2)`) and `ssize_t` on Linux.
impl_is_minus_one! { i32 i64 isize }

/// Turns a `-1` return into the thread's `errno`.
fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
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

/// Error numbers that code above this module names (the values of the target's libc).
pub(crate) use libc::{EBADF, EEXIST, ENOENT};

/// The `io::Error` of an error number such as [`EEXIST`], for refusals that are not a system
/// call's but mean the same thing.
pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// True when `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid fd is reported as EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}
