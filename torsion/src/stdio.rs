//! Standard input and output as a transport (Twisted's `StandardIO`): a plain
//! [`Protocol`] reads the process's stdin and writes its stdout, as it would a socket.
//!
//! [`start`] connects a protocol to descriptors 0 and 1 ([`start_on`] to any pair): bytes on
//! stdin reach `data_received`; writes go to stdout through the same write buffer, water marks
//! and producer registration as a socket's. End of file on stdin is `read_connection_lost`:
//! return [`HalfClose::KeepWriting`] to go on writing, or let the default close the transport
//! (what was written is flushed first, then `connection_lost(ConnectionDone)`). A write to a
//! stdout whose reader is gone (EPIPE) ends the transport with `ConnectionLost`.
//!
//! # Kinds of stdin and stdout
//! * **Pipes, sockets, terminals** are watched by the reactor like any descriptor. They are
//!   switched to non-blocking mode, as Twisted does. O_NONBLOCK belongs to the open file, which
//!   other processes may share (a terminal, the shell's pipe): while the transport is open
//!   they see it too. The flags each descriptor had are put back when the transport closes
//!   (and at the reactor's shutdown); the descriptors themselves are left open.
//! * **Regular files and devices that cannot be polled** (`< file`, `< /dev/null`, `> file`;
//!   epoll refuses them with EPERM) are not watched: a file is always ready. Stdin is read in
//!   64 KiB chunks, one per loop iteration (a queued call, so other events are served in
//!   between), until end of file; writes to stdout go straight to the file.
//!
//! # At reactor shutdown
//! The transport ends with [`Reason::ReactorShutdown`]. Output still buffered is written out
//! first, blocking, when stdout was in blocking mode before (as a program's last `println!`
//! would); it is dropped otherwise.
//!
//! # Examples
//! ```no_run
//! use torsion::{Context, HalfClose, Protocol};
//!
//! /// Echoes stdin to stdout in capitals; stops the reactor at end of input.
//! struct Shout;
//! impl Protocol for Shout {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         cx.transport().write(&data.to_ascii_uppercase());
//!     }
//!     fn connection_lost(&mut self, cx: &mut Context<'_>, _: torsion::Reason) {
//!         cx.reactor().stop().unwrap();
//!     }
//! }
//!
//! let reactor = torsion::Reactor::new()?;
//! torsion::stdio::start(&reactor, Shout)?;
//! reactor.run()?;
//! # Ok::<(), torsion::Error>(())
//! ```

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};

use crate::flow::{self, ProducerSlot};
use crate::interfaces::{
    Address, Context, HalfClose, Producer, Protocol, Transport, TransportImpl,
};
use crate::poller::{Interest, Trigger};
use crate::reactor::{Inner, Phase, Registration, SystemEvent, TriggerId};
use crate::tcp::buffer::WriteBuffer;
use crate::{sys, Error, FileDescriptor, Reactor, Reason};

/// Bytes read from stdin per event (or per iteration, for a file).
const CHUNK: usize = 64 * 1024;

/// Connects `protocol` to this process's stdin (0) and stdout (1) (Twisted's
/// `StandardIO(protocol)`); `connection_made` runs before this returns. Returns the transport.
///
/// # Errors
/// As [`start_on`].
#[doc(alias = "StandardIO")]
pub fn start<P: Protocol + 'static>(reactor: &Reactor, protocol: P) -> Result<Transport, Error> {
    start_on(reactor, protocol, 0, 1)
}

/// Connects `protocol` to the descriptors `stdin` and `stdout` (Twisted's `StandardIO(proto,
/// stdin, stdout)`). The descriptors stay owned by the caller and open after the transport
/// closes.
///
/// # Errors
/// [`Error::Io`] with `EBADF` for a descriptor that is not open, `EINVAL` when both are the
/// same number, or the reactor's error when it cannot watch them.
pub fn start_on<P: Protocol + 'static>(
    reactor: &Reactor,
    protocol: P,
    stdin: RawFd,
    stdout: RawFd,
) -> Result<Transport, Error> {
    if stdin == stdout {
        return Err(Error::Io(sys::errno(libc::EINVAL)));
    }
    for fd in [stdin, stdout] {
        if fd < 0 || !sys::fd_is_open(fd) {
            return Err(Error::Io(sys::errno(sys::EBADF)));
        }
    }
    let io = Rc::new_cyclic(|me| Stdio {
        me: me.clone(),
        reactor: Rc::downgrade(&reactor.inner),
        in_fd: stdin,
        out_fd: stdout,
        protocol: RefCell::new(Some(Box::new(protocol))),
        st: RefCell::new(St::default()),
        trigger: Cell::new(None),
    });
    if let Err(e) = io.setup(reactor) {
        io.teardown(reactor);
        return Err(e);
    }
    let me = io.clone();
    let trigger =
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |r| {
            me.trigger.set(None);
            me.finish(r, Reason::ReactorShutdown);
        });
    io.trigger.set(Some(trigger));
    let t = io.transport();
    io.with_protocol(reactor, |p, cx| p.connection_made(cx));
    if io.st.borrow().in_file {
        io.queue_file_read(reactor);
    }
    Ok(t)
}

#[derive(Default)]
struct St {
    buf: WriteBuffer,
    flow: ProducerSlot,
    in_reg: Option<Registration>,
    out_reg: Option<Registration>,
    /// Stdin cannot be polled: read it as a file.
    in_file: bool,
    /// Stdout cannot be polled: write it as a file.
    out_file: bool,
    in_flags: Option<i32>,
    out_flags: Option<i32>,
    paused: bool,
    read_done: bool,
    writing: bool,
    disconnecting: bool,
    write_shut_requested: bool,
    write_shut: bool,
    /// `connection_lost` is queued or delivered.
    closed: bool,
    file_read_queued: bool,
}

struct Stdio {
    me: Weak<Stdio>,
    reactor: Weak<Inner>,
    in_fd: RawFd,
    out_fd: RawFd,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    st: RefCell<St>,
    trigger: Cell<Option<TriggerId>>,
}

struct Stdin(Rc<Stdio>);
struct Stdout(Rc<Stdio>);

fn not_pollable(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(libc::EPERM))
}

impl Stdio {
    fn rc(&self) -> Rc<Stdio> {
        self.me.upgrade().expect("alive while its methods run")
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn transport(&self) -> Transport {
        Transport::new(self.rc())
    }

    fn setup(&self, r: &Reactor) -> Result<(), Error> {
        let in_file = sys::is_regular_file(self.in_fd)?;
        let out_file = sys::is_regular_file(self.out_fd)?;
        {
            let mut st = self.st.borrow_mut();
            st.in_file = in_file;
            st.out_file = out_file;
        }
        if !in_file {
            let old = sys::set_nonblocking(self.in_fd, true)?;
            self.st.borrow_mut().in_flags = Some(old);
            let reg = r.register(Rc::new(Stdin(self.rc())), Trigger::Level)?;
            self.st.borrow_mut().in_reg = Some(reg);
            if let Err(e) = r.set_interest(&reg, Interest::READ) {
                if !not_pollable(&e) {
                    return Err(e);
                }
                // A character device without poll support (/dev/null): read it as a file.
                r.deregister(&reg);
                let mut st = self.st.borrow_mut();
                st.in_reg = None;
                st.in_file = true;
            }
        }
        if !out_file {
            let old = sys::set_nonblocking(self.out_fd, true)?;
            self.st.borrow_mut().out_flags = Some(old);
            let reg = r.register(Rc::new(Stdout(self.rc())), Trigger::Level)?;
            self.st.borrow_mut().out_reg = Some(reg);
            // Probe that the poller takes it (interest is set only while output waits).
            match r.set_interest(&reg, Interest::WRITE) {
                Ok(()) => r.set_interest(&reg, Interest::default())?,
                Err(e) if not_pollable(&e) => {
                    r.deregister(&reg);
                    let mut st = self.st.borrow_mut();
                    st.out_reg = None;
                    st.out_file = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deregisters and restores the descriptors' flags; returns stdout's old flags.
    fn teardown(&self, r: &Reactor) -> Option<i32> {
        let (in_reg, out_reg, in_flags, out_flags) = {
            let mut st = self.st.borrow_mut();
            (
                st.in_reg.take(),
                st.out_reg.take(),
                st.in_flags.take(),
                st.out_flags.take(),
            )
        };
        for reg in [in_reg, out_reg].into_iter().flatten() {
            r.deregister(&reg);
        }
        if let Some(f) = in_flags {
            let _ = sys::set_status_flags(self.in_fd, f);
        }
        if let Some(f) = out_flags {
            let _ = sys::set_status_flags(self.out_fd, f);
        }
        out_flags
    }

    fn with_protocol<R: Default>(
        &self,
        r: &Reactor,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            debug_assert!(false, "nested stdio protocol callback");
            return R::default();
        };
        let Some(p) = slot.as_mut() else {
            return R::default();
        };
        let t = self.transport();
        let mut cx = Context::new(r, &t);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **p, &mut cx)));
        drop(slot);
        match result {
            Ok(v) => v,
            Err(payload) => {
                let msg = crate::error::panic_message(&*payload);
                tracing::error!(message = %msg, "a stdio protocol callback panicked; closing");
                self.close_later(r, Reason::Panicked(crate::error::Panicked(msg)));
                R::default()
            }
        }
    }

    fn set_reading(&self, r: &Reactor, on: bool) {
        let (reg, file) = {
            let st = self.st.borrow();
            (st.in_reg, st.in_file)
        };
        if let Some(reg) = reg {
            let interest = if on {
                Interest::READ
            } else {
                Interest::default()
            };
            let _ = r.set_interest(&reg, interest);
        } else if file && on {
            self.queue_file_read(r);
        }
    }

    fn set_writing(&self, r: &Reactor, on: bool) {
        let reg = {
            let mut st = self.st.borrow_mut();
            st.writing = on;
            st.out_reg
        };
        if let Some(reg) = reg {
            let interest = if on {
                Interest::WRITE
            } else {
                Interest::default()
            };
            if let Err(e) = r.set_interest(&reg, interest) {
                self.close_later(r, Reason::lost(io::Error::other(e.to_string())));
            }
        }
    }

    fn queue_file_read(&self, r: &Reactor) {
        {
            let mut st = self.st.borrow_mut();
            if st.file_read_queued || st.read_done || st.paused || st.closed || st.disconnecting {
                return;
            }
            st.file_read_queued = true;
        }
        let me = self.rc();
        r.call_soon(move |r| {
            me.st.borrow_mut().file_read_queued = false;
            let go = {
                let st = me.st.borrow();
                !(st.read_done || st.paused || st.closed || st.disconnecting)
            };
            if go && me.read_once(r) {
                me.queue_file_read(r);
            }
        });
    }

    /// One read of stdin; returns whether more may follow.
    fn read_once(&self, r: &Reactor) -> bool {
        let mut buf = vec![0u8; CHUNK];
        match sys::read_fd(self.in_fd, &mut buf) {
            Ok(0) => {
                self.read_eof(r);
                false
            }
            Ok(n) => {
                self.with_protocol(r, |p, cx| p.data_received(cx, &buf[..n]));
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                true
            }
            Err(e) => {
                self.close_later(r, Reason::lost(e));
                false
            }
        }
    }

    fn read_eof(&self, r: &Reactor) {
        let reg = {
            let mut st = self.st.borrow_mut();
            st.read_done = true;
            st.in_reg
        };
        if let Some(reg) = reg {
            let _ = r.set_interest(&reg, Interest::default());
        }
        let choice = self.with_protocol(r, |p, cx| p.read_connection_lost(cx));
        if choice == HalfClose::Close {
            self.lose_connection_now(r);
        }
    }

    fn lose_connection_now(&self, r: &Reactor) {
        {
            let mut st = self.st.borrow_mut();
            if st.closed || st.disconnecting {
                return;
            }
            st.disconnecting = true;
        }
        self.set_reading(r, false);
        self.maybe_finish(r);
    }

    /// Closes once flushed and no producer is registered (`lose_connection`), or reports the
    /// write side shut (`lose_write_connection`).
    fn maybe_finish(&self, r: &Reactor) {
        let (finish, write_shut) = {
            let mut st = self.st.borrow_mut();
            let flushed = st.buf.is_empty() && !st.flow.is_registered();
            let write_shut = flushed && st.write_shut_requested && !st.write_shut;
            if write_shut {
                st.write_shut = true;
            }
            (flushed && st.disconnecting, write_shut)
        };
        if finish {
            self.close_later(r, Reason::ConnectionDone);
        } else if write_shut {
            let me = self.rc();
            r.call_soon(move |r| me.with_protocol(r, |p, cx| p.write_connection_lost(cx)));
        }
    }

    fn close_later(&self, r: &Reactor, reason: Reason) {
        if self.st.borrow().closed {
            return;
        }
        let me = self.rc();
        r.call_soon(move |r| me.finish(r, reason));
    }

    /// Ends the transport: deregisters, restores flags, `connection_lost`.
    fn finish(&self, r: &Reactor, reason: Reason) {
        if std::mem::replace(&mut self.st.borrow_mut().closed, true) {
            return;
        }
        if let Some(t) = self.trigger.take() {
            r.remove_system_event_trigger(t);
        }
        let out_flags = self.teardown(r);
        // At shutdown, write what is left if stdout was blocking (a last println's behaviour).
        let rest = std::mem::take(&mut self.st.borrow_mut().buf);
        let mut rest = rest;
        if matches!(reason, Reason::ReactorShutdown)
            && out_flags.is_some_and(|f| f & libc::O_NONBLOCK == 0)
        {
            let _ = rest.flush_pipe(self.out_fd);
        }
        drop(rest);
        let producer = self.st.borrow_mut().flow.take();
        if let Some(p) = producer {
            p.stop_producing();
        }
        self.with_protocol(r, |p, cx| p.connection_lost(cx, reason));
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
    }

    fn on_writable(&self, r: &Reactor) {
        let (result, resume, pull, empty) = {
            let mut st = self.st.borrow_mut();
            let result = st.buf.flush_pipe(self.out_fd);
            let empty = st.buf.is_empty();
            let left = st.buf.len();
            let resume = st.flow.resume_if_under(left);
            let pull = if empty { st.flow.pull() } else { None };
            (result, resume, pull, empty)
        };
        if let Err(e) = result {
            self.st.borrow_mut().buf.clear();
            self.close_later(r, Reason::lost(e));
            return;
        }
        if empty && pull.is_none() {
            self.set_writing(r, false);
        }
        if let Some(p) = resume {
            p.resume_producing();
        }
        if let Some(p) = pull {
            p.resume_producing();
        }
        if empty {
            self.maybe_finish(r);
        }
    }

    fn write_parts(&self, data: &[&[u8]]) {
        let Some(r) = self.reactor() else { return };
        let (need_writer, pause, failed) = {
            let mut st = self.st.borrow_mut();
            if st.closed || st.write_shut_requested {
                return;
            }
            let mut skip = 0;
            let mut failed = None;
            if st.buf.is_empty() {
                let sent = if st.out_file {
                    // A file takes everything (a short write means the disk is full: error).
                    write_all(self.out_fd, data)
                } else {
                    match data {
                        [one] => sys::write_fd(self.out_fd, one),
                        _ => sys::writev_fd(self.out_fd, data),
                    }
                };
                match sent {
                    Ok(n) => skip = n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if failed.is_none() {
                for d in data {
                    if skip >= d.len() {
                        skip -= d.len();
                    } else {
                        st.buf.push(&d[skip..]);
                        skip = 0;
                    }
                }
            }
            let need_writer =
                (!st.buf.is_empty() || st.flow.wants_pull()) && !st.writing && !st.out_file;
            let buffered = st.buf.len();
            let pause = st.flow.pause_if_over(buffered);
            (need_writer, pause, failed)
        };
        if let Some(e) = failed {
            self.st.borrow_mut().buf.clear();
            self.close_later(&r, Reason::lost(e));
            return;
        }
        if need_writer {
            self.set_writing(&r, true);
        }
        if let Some(p) = pause {
            p.pause_producing();
        }
    }
}

/// Writes every buffer to a file descriptor that does not block (a regular file).
fn write_all(fd: RawFd, data: &[&[u8]]) -> io::Result<usize> {
    let mut total = 0;
    for d in data {
        let mut d: &[u8] = d;
        while !d.is_empty() {
            match sys::write_fd(fd, d) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    d = &d[n..];
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

impl FileDescriptor for Stdin {
    fn fileno(&self) -> RawFd {
        self.0.in_fd
    }

    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        let live = {
            let st = self.0.st.borrow();
            !(st.closed || st.read_done || st.paused)
        };
        if live {
            self.0.read_once(reactor);
        }
        Ok(())
    }

    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        self.0.st.borrow_mut().in_reg = None;
        self.0.finish(reactor, reason);
    }
}

impl FileDescriptor for Stdout {
    fn fileno(&self) -> RawFd {
        self.0.out_fd
    }

    fn do_write(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.0.on_writable(reactor);
        Ok(())
    }

    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        self.0.st.borrow_mut().out_reg = None;
        self.0.finish(reactor, reason);
    }
}

impl TransportImpl for Stdio {
    fn write_sequence(&self, data: &[&[u8]]) {
        self.write_parts(data);
    }

    fn lose_connection(&self) {
        if let Some(r) = self.reactor() {
            self.lose_connection_now(&r);
        }
    }

    fn abort_connection(&self) {
        if let Some(r) = self.reactor() {
            self.st.borrow_mut().buf.clear();
            self.close_later(&r, Reason::ConnectionAborted);
        }
    }

    fn lose_write_connection(&self) {
        let Some(r) = self.reactor() else { return };
        self.st.borrow_mut().write_shut_requested = true;
        self.maybe_finish(&r);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        let what = {
            let mut st = self.st.borrow_mut();
            let (closed, buffered) = (st.closed, st.buf.len());
            st.flow
                .register(producer.clone(), streaming, closed, buffered)?
        };
        flow::tell(&producer, what);
        Ok(())
    }

    fn unregister_producer(&self) {
        let Some(r) = self.reactor() else { return };
        let old = self.st.borrow_mut().flow.take();
        drop(old);
        self.maybe_finish(&r);
    }

    fn pause_producing(&self) {
        let Some(r) = self.reactor() else { return };
        self.st.borrow_mut().paused = true;
        self.set_reading(&r, false);
    }

    fn resume_producing(&self) {
        let Some(r) = self.reactor() else { return };
        let go = {
            let mut st = self.st.borrow_mut();
            st.paused = false;
            !(st.closed || st.read_done || st.disconnecting)
        };
        if go {
            self.set_reading(&r, true);
        }
    }

    fn peer(&self) -> Address {
        Address::Process { pid: None }
    }

    fn host(&self) -> Address {
        Address::Process {
            pid: Some(std::process::id()),
        }
    }

    fn buffered(&self) -> usize {
        self.st.borrow().buf.len()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.st.borrow_mut().flow.set_limits(high, low);
    }

    fn connected(&self) -> bool {
        !self.st.borrow().closed
    }

    fn disconnecting(&self) -> bool {
        self.st.borrow().disconnecting
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        // Flags are restored at close; this covers a transport dropped with its reactor
        // without a close (the registrations hold it, so that does not happen in practice).
        let st = self.st.get_mut();
        if let Some(f) = st.in_flags.take() {
            let _ = sys::set_status_flags(self.in_fd, f);
        }
        if let Some(f) = st.out_flags.take() {
            let _ = sys::set_status_flags(self.out_fd, f);
        }
    }
}
