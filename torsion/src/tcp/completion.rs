//! A stream connection on io_uring completions: the same state machine as the readiness path
//! (`connection.rs`), with other I/O underneath.
//!
//! * **Reading** is one multishot receive into the reactor's provided-buffer ring. Each
//!   completion brings a buffer, delivered to the protocol and then given back to the ring.
//!   When the ring runs dry the kernel ends the receive with ENOBUFS: nothing was taken from
//!   the socket, so the receive is simply armed again (and counted in
//!   [`Stats::buffer_ring_exhausted`](crate::reactor::Stats::buffer_ring_exhausted)).
//! * **Pausing** cancels the receive. Bytes the kernel delivered before the cancellation took
//!   effect are copied aside (the buffers go straight back to the ring, so a paused connection
//!   holds none) and delivered first when reading resumes, before the receive is armed again:
//!   nothing is lost or reordered. The end of the stream, if it came meanwhile, follows them.
//! * **Writing** buffers everything and asks the reactor for a call before its next wait; that
//!   call moves the front of the write buffer into one SEND (SENDMSG for several chunks), so
//!   that all the writes of an iteration reach the kernel in the wait's own `io_uring_enter`.
//!   One SEND is in flight per connection; the bytes belong to the ring until it completes,
//!   and what it did not send goes back to the front of the buffer. Flow control counts the
//!   bytes in flight as buffered.
//! * **Closing** cancels the operations still in flight (a receive, or a SEND stuck on a peer
//!   that does not read: each holds the socket open) and closes the descriptor. A graceful
//!   close waits for the buffer to drain first, as on readiness.

use std::cell::{Cell, RefCell};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Weak;

use super::connection::{Kind, StreamConnection};
use crate::error::{panic_message, Panicked};
use crate::poller::uring::{Done, OpTarget, Port};
use crate::{Reactor, Reason};

/// The most bytes of the stash one `data_received` gets (a read's worth, as Twisted's 64 KiB):
/// a protocol that pauses again part-way through is not handed the rest.
const STASH_PIECE: usize = 64 * 1024;

/// Where the multishot receive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// None in flight.
    Idle,
    /// Armed: its completions bring bytes.
    Armed(u64),
    /// Cancelled (paused or closing): its completions may still bring bytes.
    Cancelling(u64),
}

/// The completion-side state of a connection.
pub(crate) struct Uring {
    port: Port,
    recv: Cell<Recv>,
    /// The SEND in flight.
    send: Cell<Option<u64>>,
    /// Waits for the reactor's call before its next wait.
    queued: Cell<bool>,
    /// Bytes received while paused (or behind such bytes), delivered first on resume.
    stash: RefCell<Vec<u8>>,
    /// The end of the stream came behind the stash.
    eof: Cell<bool>,
    /// A delivery of the stash is queued.
    delivering: Cell<bool>,
    /// The close cancelled operations: submit the cancellations at once.
    cancelled: Cell<bool>,
}

impl Uring {
    pub(super) fn new(port: Port) -> Uring {
        Uring {
            port,
            recv: Cell::new(Recv::Idle),
            send: Cell::new(None),
            queued: Cell::new(false),
            stash: RefCell::default(),
            eof: Cell::new(false),
            delivering: Cell::new(false),
            cancelled: Cell::new(false),
        }
    }

    /// Hands the cancellations made by the close to the kernel now (each operation holds the
    /// socket open: the peer sees the close only once they are gone), if there were any.
    pub(super) fn submit_cancellations(&self) {
        if self.cancelled.replace(false) {
            self.port.submit();
        }
    }
}

impl<K: Kind> StreamConnection<K> {
    fn u(&self) -> &Uring {
        self.uring.as_ref().expect("a connection on completions")
    }

    fn target(&self) -> Weak<dyn OpTarget> {
        let me: Weak<dyn OpTarget> = self.me.clone();
        me
    }

    /// Arms the multishot receive.
    pub(super) fn arm_recv(&self) -> io::Result<()> {
        let u = self.u();
        if u.recv.get() != Recv::Idle {
            return Ok(());
        }
        let op = u.port.recv(self.fd, self.target())?;
        u.recv.set(Recv::Armed(op));
        Ok(())
    }

    /// `watch` on completions: reading on arms the receive (after any stash), off cancels it;
    /// writing on asks for a SEND before the next wait.
    pub(super) fn watch_completions(&self, r: &Reactor, before: (bool, bool), now: (bool, bool)) {
        let u = self.u();
        if before.0 != now.0 {
            if now.0 {
                self.resume_reading(r);
            } else if let Recv::Armed(op) = u.recv.get() {
                u.port.cancel(op);
                u.recv.set(Recv::Cancelling(op));
            }
        }
        if now.1 && !before.1 {
            self.queue_send(r);
        }
    }

    fn resume_reading(&self, r: &Reactor) {
        let u = self.u();
        if !u.stash.borrow().is_empty() || u.eof.get() {
            if !u.delivering.replace(true) {
                let me = self.rc();
                r.call_soon(move |r| me.deliver_stash(r));
            }
            return;
        }
        // A receive being cancelled is armed again by its last completion.
        if u.recv.get() == Recv::Idle {
            if let Err(e) = self.arm_recv() {
                self.doom(r, Reason::lost(e), false);
            }
        }
    }

    /// Delivers what was received while paused, in pieces of at most [`STASH_PIECE`] bytes
    /// for as long as the protocol reads, then the end of the stream if it came, then reads on.
    fn deliver_stash(&self, r: &Reactor) {
        let u = self.u();
        u.delivering.set(false);
        if self.st.borrow().gone() || !self.st.borrow().reading {
            return; // paused again: resuming queues this again
        }
        let mut data = std::mem::take(&mut *u.stash.borrow_mut());
        let t = self.transport();
        let mut at = 0;
        while at < data.len() {
            let end = data.len().min(at + STASH_PIECE);
            self.with_protocol(r, &t, |p, cx| p.data_received(cx, &data[at..end]));
            at = end;
            let st = self.st.borrow();
            if st.gone() || !st.reading {
                break;
            }
        }
        let (gone, reading) = {
            let st = self.st.borrow();
            (st.gone(), st.reading)
        };
        if gone {
            return;
        }
        if at < data.len() {
            // Paused again part-way: the rest stays first in line.
            data.drain(..at);
            let mut stash = u.stash.borrow_mut();
            data.extend_from_slice(&stash);
            *stash = data;
        }
        if !u.stash.borrow().is_empty() {
            // More came behind (the receive was being cancelled): in order, next time.
            if reading {
                self.resume_reading(r);
            }
            return;
        }
        if u.eof.get() {
            if !reading {
                return;
            }
            u.eof.set(false);
            self.close_on(r, self.read_eof(r, &t));
            return;
        }
        if reading {
            self.resume_reading(r);
        }
    }

    /// Closes the connection when a step of its state machine says so (as the reactor does
    /// with a readiness callback's error).
    fn close_on(&self, r: &Reactor, step: Result<(), Reason>) {
        if let Err(reason) = step {
            self.close_now(r, reason);
        }
    }

    fn queue_send(&self, r: &Reactor) {
        let u = self.u();
        if !u.queued.replace(true) {
            r.want_before_poll(self.rc());
        }
    }

    /// One receive completion.
    fn received(&self, r: &Reactor, d: &mut Done) {
        let u = self.u();
        if !d.more {
            u.recv.set(Recv::Idle);
        }
        if self.st.borrow().gone() {
            return;
        }
        match d.result {
            n if n > 0 => {
                let Some(buf) = d.buffer.take() else {
                    tracing::error!(peer = %self.peer, "an io_uring receive completed without its buffer; closing");
                    return self.doom(
                        r,
                        Reason::lost(io::Error::other("receive without a buffer")),
                        false,
                    );
                };
                let reading = self.st.borrow().reading;
                if !reading || !u.stash.borrow().is_empty() {
                    u.stash.borrow_mut().extend_from_slice(&buf);
                    drop(buf);
                    if reading {
                        self.resume_reading(r);
                    }
                } else {
                    let t = self.transport();
                    self.with_protocol(r, &t, |p, cx| p.data_received(cx, &buf));
                    // The buffer goes back to the ring only now: the protocol had it in hand.
                    drop(buf);
                }
            }
            0 => {
                // The end of the stream: after whatever waits in the stash.
                let (reading, stashed) = (self.st.borrow().reading, !u.stash.borrow().is_empty());
                if !reading || stashed {
                    u.eof.set(true);
                    if reading {
                        self.resume_reading(r);
                    }
                } else {
                    let t = self.transport();
                    self.close_on(r, self.read_eof(r, &t));
                }
                return;
            }
            e if e == -libc::ENOBUFS => r.note_buffer_ring_exhausted(),
            e if e == -libc::ECANCELED || e == -libc::EINTR || e == -libc::EAGAIN => {}
            e => {
                let err = io::Error::from_raw_os_error(-e);
                return self.doom(r, Reason::lost(err), false);
            }
        }
        // The receive ended (ENOBUFS, a cancellation, or the kernel's choice): arm it again
        // if the protocol still reads.
        let st = self.st.borrow();
        let again = u.recv.get() == Recv::Idle
            && st.reading
            && !st.gone()
            && !st.read_closed
            && u.stash.borrow().is_empty()
            && !u.eof.get();
        drop(st);
        if again {
            if let Err(e) = self.arm_recv() {
                self.doom(r, Reason::lost(e), false);
            }
        }
    }

    /// One SEND completion.
    fn sent(&self, r: &Reactor, d: &mut Done) {
        let u = self.u();
        u.send.set(None);
        let Some(op) = d.send.take() else {
            tracing::error!(peer = %self.peer, "an io_uring SEND completed without its bytes");
            return;
        };
        if self.st.borrow().gone() {
            return; // discarded: the bytes are freed here
        }
        let n = match d.result {
            n if n >= 0 => n as usize,
            e if e == -libc::EINTR || e == -libc::EAGAIN || e == -libc::ECANCELED => 0,
            e => {
                drop(op);
                let err = io::Error::from_raw_os_error(-e);
                return self.doom(r, Reason::lost(err), false);
            }
        };
        let empty = {
            let mut st = self.st.borrow_mut();
            st.buf.complete_send(op, n);
            st.buf.is_empty()
        };
        self.maybe_resume_streaming();
        if !empty {
            self.queue_send(r);
        } else {
            self.close_on(r, self.flushed(r));
        }
    }

    /// `close_now` on completions, before the socket is closed: cancels what is in flight. At
    /// the reactor's shutdown, what is buffered and not yet handed to the kernel is offered to
    /// the socket once, without waiting (the readiness path would have sent it at the write).
    pub(super) fn closing_completions(&self, reason: &Reason) {
        let u = self.u();
        {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            if matches!(reason, Reason::ReactorShutdown) && !st.doomed && !st.buf.sending() {
                let _ = st.buf.flush(self.fd);
            }
        }
        if let Recv::Armed(op) | Recv::Cancelling(op) = u.recv.replace(Recv::Idle) {
            u.port.cancel(op);
            u.cancelled.set(true);
        }
        if let Some(op) = u.send.take() {
            u.port.cancel(op);
            u.cancelled.set(true);
        }
        u.stash.borrow_mut().clear();
        u.eof.set(false);
    }
}

impl<K: Kind> StreamConnection<K> {
    /// Runs a completion-side handler as the reactor runs a readiness callback: a panic in the
    /// user code it reaches (a producer's `resume_producing`) closes this connection, and only
    /// it.
    fn guarded(&self, r: &Reactor, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = panic_message(&*payload);
            tracing::error!(peer = %self.peer, message = %msg, "a callback panicked; closing its connection");
            self.close_now(r, Reason::Panicked(Panicked(msg)));
        }
    }

    fn complete_unguarded(&self, r: &Reactor, d: &mut Done) {
        let u = self.u();
        let is_recv = matches!(u.recv.get(), Recv::Armed(op) | Recv::Cancelling(op) if op == d.op);
        if d.send.is_some() {
            self.sent(r, d);
        } else if is_recv {
            self.received(r, d);
        }
        // Anything else belongs to an operation already forgotten (cancelled at the close):
        // dropping it gives its buffer back.
    }

    fn before_poll_unguarded(&self, r: &Reactor) {
        let u = self.u();
        u.queued.set(false);
        let op = {
            let mut st = self.st.borrow_mut();
            if st.gone() || !st.writing || st.buf.sending() {
                return;
            }
            st.buf.take_send()
        };
        let Some(op) = op else {
            // Nothing to send, and nothing in flight: what a writable socket would do.
            self.close_on(r, self.flushed(r));
            return;
        };
        match u.port.send(self.fd, op, self.target()) {
            Ok(id) => u.send.set(Some(id)),
            Err((e, op)) => {
                if let Some(op) = op {
                    self.st.borrow_mut().buf.complete_send(op, 0);
                }
                self.doom(r, Reason::lost(e), false);
            }
        }
    }
}

impl<K: Kind> OpTarget for StreamConnection<K> {
    fn complete(&self, r: &Reactor, d: &mut Done) {
        self.guarded(r, || self.complete_unguarded(r, d));
    }

    fn before_poll(&self, r: &Reactor) {
        self.guarded(r, || self.before_poll_unguarded(r));
    }
}
