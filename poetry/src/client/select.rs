//! The article's select() client, on the reactor: each socket is a raw
//! [`FileDescriptor`] watched with `add_reader`, read until EOF whenever it is readable. No
//! transports, no protocols: the loop is the reactor's, the per-socket code is ours.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use torsion::{FileDescriptor, Reactor, Reason};

use super::blocking::connect;
use super::{Collector, GetOptions};
use crate::Address;

/// One download: a non-blocking socket and the poem so far.
struct PoetrySocket {
    task: usize,
    fd: RawFd,
    sock: RefCell<Option<TcpStream>>,
    poem: RefCell<Vec<u8>>,
    collector: Rc<Collector>,
}

impl FileDescriptor for PoetrySocket {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
        let mut sock = self.sock.borrow_mut();
        let sock = sock.as_mut().ok_or(Reason::ConnectionDone)?;
        let mut buf = [0u8; 1024];
        // As the original: read until the socket would block (or the poem ends).
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Err(Reason::ConnectionDone),
                Ok(n) => {
                    self.poem.borrow_mut().extend_from_slice(&buf[..n]);
                    self.collector.bytes(self.task, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Reason::lost(e)),
            }
        }
    }

    fn connection_lost(&self, _: &Reactor, reason: Reason) {
        // The reactor has stopped watching the socket: now it may close.
        self.sock.borrow_mut().take();
        let poem = std::mem::take(&mut *self.poem.borrow_mut());
        let result = if reason.is_clean() {
            Ok(poem)
        } else {
            Err(reason.to_string())
        };
        self.collector.done(self.task, result);
    }
}

/// Connects to every address (blocking connects, as the original) and watches the sockets.
pub(super) fn start(
    reactor: &Reactor,
    tasks: &[Address],
    opts: &GetOptions,
    collector: &Rc<Collector>,
) -> io::Result<()> {
    for (task, address) in tasks.iter().enumerate() {
        let sock = match connect(address, opts.timeout) {
            Ok(s) => s,
            Err(e) => {
                collector.done(task, Err(e.to_string()));
                continue;
            }
        };
        sock.set_nonblocking(true)?;
        let d = Rc::new(PoetrySocket {
            task,
            fd: sock.as_raw_fd(),
            sock: RefCell::new(Some(sock)),
            poem: RefCell::default(),
            collector: collector.clone(),
        });
        if let Err(e) = reactor.add_reader(d.clone()) {
            d.sock.borrow_mut().take();
            collector.done(task, Err(e.to_string()));
        }
    }
    Ok(())
}
