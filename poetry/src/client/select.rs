//! The article's select() client, on the reactor: each socket is a raw
//! [`FileDescriptor`] watched with `add_reader`, read until EOF whenever it is readable. No
//! transports, no protocols: the loop is the reactor's, the per-socket code is ours.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use torsion::defer::TimedOut;
use torsion::{DelayedCall, FileDescriptor, Reactor, Reason};

use super::blocking::connect;
use super::limits::too_large;
use super::{Collector, GetOptions, Limits};
use crate::Address;

/// One download: a non-blocking socket and the poem so far.
struct PoetrySocket {
    task: usize,
    fd: RawFd,
    sock: RefCell<Option<TcpStream>>,
    poem: RefCell<Vec<u8>>,
    collector: Rc<Collector>,
    limits: Limits,
    /// Fails the download when the server stays silent for `limits.idle_timeout`.
    idle: RefCell<Option<DelayedCall>>,
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
                    let mut poem = self.poem.borrow_mut();
                    if poem.len() + n > self.limits.max_poem {
                        return Err(Reason::lost(too_large(self.limits.max_poem)));
                    }
                    poem.extend_from_slice(&buf[..n]);
                    self.collector.bytes(self.task, n);
                    if let Some(t) = &*self.idle.borrow() {
                        let _ = t.reset(self.limits.idle_timeout);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Reason::lost(e)),
            }
        }
    }

    fn connection_lost(&self, _: &Reactor, reason: Reason) {
        if let Some(t) = self.idle.borrow_mut().take() {
            let _ = t.cancel();
        }
        // The reactor has stopped watching the socket: now it may close.
        self.sock.borrow_mut().take();
        let poem = std::mem::take(&mut *self.poem.borrow_mut());
        let result = if reason.is_clean() {
            Ok(poem)
        } else {
            Err(torsion::error::Chain(&reason).to_string())
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
            limits: opts.limits,
            idle: RefCell::new(None),
        });
        if let Err(e) = reactor.add_reader(d.clone()) {
            d.sock.borrow_mut().take();
            collector.done(task, Err(e.to_string()));
            continue;
        }
        let weak = Rc::downgrade(&d);
        let after = opts.limits.idle_timeout;
        let timer = reactor.call_later(after, move |r| {
            if let Some(d) = weak.upgrade() {
                d.idle.borrow_mut().take();
                r.remove_reader(&*d);
                d.connection_lost(r, Reason::TimedOut(TimedOut { after }));
            }
        });
        *d.idle.borrow_mut() = Some(timer);
    }
    Ok(())
}
