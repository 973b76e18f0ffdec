//! What protocols call on a stream connection ([`TransportImpl`]), and a TCP connection's
//! [`TcpOptions`].

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

use super::connection::{Connection, FdMark, Kind, StreamConnection, WriteShut};
use crate::interfaces::{
    Address, Producer, SendFdsError, TcpOptions, TransportImpl, UnixTransport,
};
use crate::{flow, sys, Error, Reason};

impl<K: Kind> TransportImpl for StreamConnection<K> {
    fn write_sequence(&self, data: &[&[u8]]) {
        self.write_parts(data, None, None);
    }

    fn write_shared(&self, data: Rc<[u8]>) {
        self.write_parts(&[], Some(data), None);
    }

    fn lose_connection(&self) {
        let Some(r) = self.reactor() else { return };
        {
            let mut st = self.st.borrow_mut();
            if st.gone() || st.disconnecting {
                return;
            }
            st.disconnecting = true;
        }
        self.watch(&r, Some(false), Some(true));
    }

    fn abort_connection(&self) {
        if let Some(r) = self.reactor() {
            self.doom(&r, Reason::ConnectionAborted, true);
        }
    }

    fn lose_write_connection(&self) {
        let Some(r) = self.reactor() else { return };
        {
            let mut st = self.st.borrow_mut();
            if st.gone() || st.write_shut != WriteShut::Open {
                return;
            }
            st.write_shut = WriteShut::Requested;
        }
        self.watch(&r, None, Some(true));
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        let what = {
            let mut st = self.st.borrow_mut();
            let (closed, buffered) = (st.gone(), st.buf.len());
            st.flow
                .register(producer.clone(), streaming, closed, buffered)?
        };
        flow::tell(&producer, what);
        Ok(())
    }

    fn unregister_producer(&self) {
        let Some(r) = self.reactor() else { return };
        let (old, finish) = {
            let mut st = self.st.borrow_mut();
            (st.flow.take(), st.disconnecting && !st.closed)
        };
        drop(old); // may drop user state: no borrow held
        if finish {
            self.watch(&r, None, Some(true));
        }
    }

    fn pause_producing(&self) {
        let Some(r) = self.reactor() else { return };
        self.watch(&r, Some(false), None);
    }

    fn resume_producing(&self) {
        let Some(r) = self.reactor() else { return };
        let can_read = {
            let st = self.st.borrow();
            !(st.gone() || st.disconnecting || st.read_closed)
        };
        if can_read {
            self.watch(&r, Some(true), None);
        }
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    fn buffered(&self) -> usize {
        self.st.borrow().buf.len()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.st.borrow_mut().flow.set_limits(high, low);
    }

    fn connected(&self) -> bool {
        !self.st.borrow().gone()
    }

    fn disconnecting(&self) -> bool {
        self.st.borrow().disconnecting
    }

    fn tcp(&self) -> Option<&dyn TcpOptions> {
        K::tcp(self)
    }

    fn unix(&self) -> Option<&dyn UnixTransport> {
        K::unix(self)
    }
}

impl<K: Kind> StreamConnection<K> {
    /// Writes `data` with descriptors that go with its first byte (Unix sockets).
    pub(crate) fn send_fds(&self, fds: Vec<OwnedFd>, data: &[u8]) -> Result<(), SendFdsError> {
        if fds.is_empty() {
            return Err(SendFdsError::NoDescriptors);
        }
        if data.is_empty() {
            return Err(SendFdsError::NoData);
        }
        let max = self.fd_limits.per_message.min(sys::SCM_MAX_FD);
        if fds.len() > max {
            return Err(SendFdsError::TooMany {
                given: fds.len(),
                max,
            });
        }
        {
            let st = self.st.borrow();
            if st.gone() || st.write_shut != WriteShut::Open || self.reactor().is_none() {
                return Err(SendFdsError::NotConnected);
            }
            let queued = st.queued_fds() + fds.len();
            if queued > self.fd_limits.queued {
                return Err(SendFdsError::QueueFull {
                    queued,
                    max: self.fd_limits.queued,
                });
            }
        }
        self.write_parts(&[data], None, Some(fds));
        Ok(())
    }

    /// Writes `data`, or the `shared` bytes (one or the other): sent at once as far as the
    /// socket takes them when nothing is buffered, the rest buffered (shared bytes by
    /// reference). `fds` go with the first byte of `data` (never with `shared`).
    #[inline]
    fn write_parts(&self, data: &[&[u8]], shared: Option<Rc<[u8]>>, fds: Option<Vec<OwnedFd>>) {
        let Some(r) = self.reactor() else { return };
        let (need_writer, pause, failed) = {
            let mut st = self.st.borrow_mut();
            // As Twisted: writes are accepted until the write side is actually shut.
            if st.gone() || st.write_shut == WriteShut::Done {
                return;
            }
            let mut skip = 0;
            let mut failed = None;
            let mut fds = fds;
            // On io_uring completions, every write is queued and sent with the next wait.
            if st.buf.is_empty() && self.uring.is_none() {
                let sent = match (&shared, data, &fds) {
                    (_, _, Some(f)) => sys::send_with_fds(self.fd, data, f),
                    (Some(s), _, None) => sys::send(self.fd, s),
                    (None, [one], None) => sys::send(self.fd, one),
                    (None, _, None) => sys::send_vectored(self.fd, data),
                };
                match sent {
                    Ok(n) => {
                        skip = n;
                        if n > 0 {
                            fds = None; // sent with the first byte; ours are closed
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if let (None, Some(fds)) = (&failed, fds) {
                let at = st.buf.len();
                st.marks.push_back(FdMark { at, fds });
            }
            if let (None, Some(s)) = (&failed, shared) {
                st.buf.push_shared(s, skip);
            } else if failed.is_none() {
                for d in data {
                    if skip >= d.len() {
                        skip -= d.len();
                    } else {
                        st.buf.push(&d[skip..]);
                        skip = 0;
                    }
                }
            }
            // A pull producer is asked for more when the socket can take it: after any write
            // while one is registered, watch for writability even if nothing was buffered.
            let pull = st.flow.wants_pull();
            let need_writer = (!st.buf.is_empty() || pull) && !st.writing;
            if let Some(limit) = self.limits.max_write_buffer {
                if st.buf.len() > limit {
                    drop(st);
                    tracing::warn!(peer = %self.peer, limit, "a write buffer passed its limit; resetting the connection");
                    self.doom(&r, Reason::WriteBufferFull { limit }, true);
                    return;
                }
            }
            let buffered = st.buf.len();
            let pause = st.flow.pause_if_over(buffered);
            (need_writer, pause, failed)
        };
        if let Some(e) = failed {
            self.doom(&r, Reason::lost(e), false);
            return;
        }
        if need_writer {
            self.watch(&r, None, Some(true));
        }
        if let Some(p) = pause {
            p.pause_producing();
        }
    }
}

impl Connection {
    fn sock_opt<T>(&self, f: impl FnOnce(RawFd) -> io::Result<T>) -> io::Result<T> {
        if self.sock.borrow().is_none() {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        f(self.fd)
    }
}

impl TcpOptions for Connection {
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_nodelay(fd, on))
    }

    fn nodelay(&self) -> io::Result<bool> {
        self.sock_opt(sys::nodelay)
    }

    fn set_keepalive(&self, on: bool) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_keepalive(fd, on))
    }

    fn keepalive(&self) -> io::Result<bool> {
        self.sock_opt(sys::keepalive)
    }

    fn set_receive_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_recv_buffer(fd, bytes))
    }

    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_send_buffer(fd, bytes))
    }
}
