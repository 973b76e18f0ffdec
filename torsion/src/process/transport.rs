//! A running child: its pipes and pidfd in the reactor, and its transport.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::{plan_parts, ChildFd, ExitStatus, OnShutdown, ProcessProtocol, Signal, SignalError};
use super::{Spawn, SpawnError, MAX_CHILD_FD};
use crate::error::panic_message;
use crate::flow::{self, ProducerSlot};
use crate::interfaces::Producer;
use crate::poller::{Interest, Trigger};
use crate::reactor::{Inner, Registration};
use crate::tcp::buffer::{Flush, WriteBuffer};
use crate::{sys, Error, FileDescriptor, Reactor, Reason};

/// Bytes read from a child's pipe per readiness event at most.
const READ_CHUNK: usize = 64 * 1024;

/// What a [`ProcessProtocol`] callback is given: the reactor and the child's transport.
#[derive(Debug)]
pub struct ProcessContext<'a> {
    reactor: &'a Reactor,
    process: &'a ProcessTransport,
}

impl<'a> ProcessContext<'a> {
    /// A context for calling a process protocol's callbacks (for wrappers and tests).
    pub fn new(reactor: &'a Reactor, process: &'a ProcessTransport) -> ProcessContext<'a> {
        ProcessContext { reactor, process }
    }

    /// The reactor the child is watched by.
    pub fn reactor(&self) -> &'a Reactor {
        self.reactor
    }

    /// The child's transport. Clone it to keep it.
    pub fn process(&self) -> &'a ProcessTransport {
        self.process
    }
}

/// A running (or ended) child process (Twisted's `IProcessTransport`): write to its pipes,
/// close them, signal it. Cheap to clone; clones are the same child and compare equal.
#[derive(Clone)]
pub struct ProcessTransport(pub(super) Rc<Process>);

impl PartialEq for ProcessTransport {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProcessTransport {}

impl fmt::Debug for ProcessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTransport")
            .field("pid", &self.0.pid)
            .field("status", &self.status())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// The parent reads.
    Read,
    /// The parent writes.
    Write,
}

struct Pipe {
    dir: Dir,
    fd: OwnedFd,
    reg: Option<Registration>,
    buf: WriteBuffer,
    flow: ProducerSlot,
    /// Close once the buffer is flushed and no producer is registered.
    closing: bool,
    /// Registered for writability.
    writing: bool,
    /// Registered for readability (readers: not paused).
    reading: bool,
}

struct State {
    pipes: BTreeMap<RawFd, Pipe>,
    status: Option<ExitStatus>,
    /// `process_exited` was delivered.
    exited_told: bool,
    /// `process_ended` was delivered.
    ended: bool,
    /// Reading is paused (`pause_producing`).
    paused: bool,
    /// Closed pipes whose `child_connection_lost` waits for the protocol to be free.
    lost: Vec<RawFd>,
    /// A call to deliver `lost` is queued.
    drain_queued: bool,
}

pub(super) struct Process {
    me: Weak<Process>,
    reactor: Weak<Inner>,
    pid: u32,
    on_shutdown: OnShutdown,
    pidfd: RefCell<Option<OwnedFd>>,
    pid_reg: Cell<Option<Registration>>,
    protocol: RefCell<Option<Box<dyn ProcessProtocol>>>,
    st: RefCell<State>,
}

/// A pipe's registration (holds the process alive while registered).
struct PipeEnd {
    process: Rc<Process>,
    child_fd: RawFd,
    fd: RawFd,
}

/// The pidfd's registration.
struct PidWatch {
    process: Rc<Process>,
    fd: RawFd,
}

/// Starts a child (see `Reactor::spawn_process`).
pub(super) fn start(
    reactor: &Reactor,
    protocol: Box<dyn ProcessProtocol>,
    spec: &Spawn,
) -> Result<ProcessTransport, SpawnError> {
    let (path, argv, envp, cwd) = plan_parts(spec)?;
    // The parent's ends (kept) and the child's ends (closed once it has them).
    let mut ours: Vec<(RawFd, Dir, OwnedFd)> = Vec::new();
    let mut theirs: Vec<OwnedFd> = Vec::new();
    let mut map: Vec<(RawFd, RawFd)> = Vec::new();
    for (&target, &what) in &spec.fds {
        if !(0..=MAX_CHILD_FD).contains(&target) {
            return Err(SpawnError::BadChildFd(target));
        }
        match what {
            ChildFd::Inherit(fd) => {
                if fd < 0 || !sys::fd_is_open(fd) {
                    return Err(SpawnError::BadChildFd(fd));
                }
                map.push((fd, target));
            }
            ChildFd::Read | ChildFd::Write => {
                let (r, w) = sys::pipe_cloexec().map_err(SpawnError::Io)?;
                let (mine, child, dir) = if what == ChildFd::Read {
                    (r, w, Dir::Read)
                } else {
                    (w, r, Dir::Write)
                };
                sys::set_nonblocking(mine.as_raw_fd(), true).map_err(SpawnError::Io)?;
                map.push((child.as_raw_fd(), target));
                ours.push((target, dir, mine));
                theirs.push(child);
            }
        }
    }
    let plan = sys::SpawnPlan {
        path,
        argv,
        envp,
        cwd,
        fds: map,
    };
    let pid = sys::spawn(&plan).map_err(|(stage, e)| match stage {
        sys::SpawnStage::Chdir => SpawnError::BadDirectory {
            dir: spec.cwd.clone().unwrap_or_default(),
            error: e,
        },
        sys::SpawnStage::Exec => match e.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound(spec.program.clone()),
            io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied(spec.program.clone()),
            _ => SpawnError::Exec(e),
        },
        sys::SpawnStage::Fds => SpawnError::Io(e),
    })?;
    drop(theirs);
    super::unreaped().insert(pid);
    let kill_now = |e: SpawnError| {
        let _ = sys::kill_pid(pid, libc::SIGKILL);
        let _ = sys::wait_blocking(pid);
        super::unreaped().remove(&pid);
        e
    };
    let pidfd = sys::pidfd_open(pid).map_err(|e| kill_now(SpawnError::Io(e)))?;
    let pidfd_raw = pidfd.as_raw_fd();
    let mut pipes = BTreeMap::new();
    for (target, dir, fd) in ours {
        pipes.insert(
            target,
            Pipe {
                dir,
                fd,
                reg: None,
                buf: WriteBuffer::default(),
                flow: ProducerSlot::default(),
                closing: false,
                writing: false,
                reading: true,
            },
        );
    }
    let process = Rc::new_cyclic(|me| Process {
        me: me.clone(),
        reactor: Rc::downgrade(&reactor.inner),
        pid,
        on_shutdown: spec.on_shutdown,
        pidfd: RefCell::new(Some(pidfd)),
        pid_reg: Cell::new(None),
        protocol: RefCell::new(Some(protocol)),
        st: RefCell::new(State {
            pipes,
            status: None,
            exited_told: false,
            ended: false,
            paused: false,
            lost: Vec::new(),
            drain_queued: false,
        }),
    });
    if let Err(e) = process.register_all(reactor, pidfd_raw) {
        process.unregister_all(reactor);
        *process.protocol.borrow_mut() = None;
        return Err(kill_now(SpawnError::Reactor(e)));
    }
    let t = ProcessTransport(process.clone());
    process.with_protocol(reactor, |p, cx| p.connection_made(cx));
    Ok(t)
}

impl Process {
    fn rc(&self) -> Rc<Process> {
        self.me
            .upgrade()
            .expect("a process is alive while its methods run")
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn register_all(&self, r: &Reactor, pidfd: RawFd) -> Result<(), Error> {
        let watch = Rc::new(PidWatch {
            process: self.rc(),
            fd: pidfd,
        });
        let reg = r.register(watch, Trigger::Level)?;
        self.pid_reg.set(Some(reg));
        r.set_interest(&reg, Interest::READ)?;
        let fds: Vec<(RawFd, RawFd)> = self
            .st
            .borrow()
            .pipes
            .iter()
            .map(|(&t, p)| (t, p.fd.as_raw_fd()))
            .collect();
        for (target, fd) in fds {
            let end = Rc::new(PipeEnd {
                process: self.rc(),
                child_fd: target,
                fd,
            });
            let reg = r.register(end, Trigger::Level)?;
            if let Some(p) = self.st.borrow_mut().pipes.get_mut(&target) {
                p.reg = Some(reg);
            }
            // Readers read; writers watch for readability too, which for a pipe's write end
            // means an error: the child closed its end.
            r.set_interest(&reg, Interest::READ)?;
        }
        Ok(())
    }

    fn unregister_all(&self, r: &Reactor) {
        if let Some(reg) = self.pid_reg.take() {
            r.deregister(&reg);
        }
        let pipes = std::mem::take(&mut self.st.borrow_mut().pipes);
        for p in pipes.values() {
            if let Some(reg) = &p.reg {
                r.deregister(reg);
            }
        }
        drop(pipes);
    }

    fn transport(&self) -> ProcessTransport {
        ProcessTransport(self.rc())
    }

    /// Runs a protocol callback. Never nested: callers only call it from the loop (events),
    /// or after checking that the protocol is free.
    fn with_protocol(
        &self,
        r: &Reactor,
        f: impl FnOnce(&mut dyn ProcessProtocol, &mut ProcessContext<'_>),
    ) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            debug_assert!(false, "nested process protocol callback");
            return;
        };
        let Some(p) = slot.as_mut() else { return };
        let t = self.transport();
        let mut cx = ProcessContext::new(r, &t);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **p, &mut cx)));
        drop(slot);
        if let Err(payload) = result {
            tracing::error!(pid = self.pid, message = %panic_message(&*payload), "a process protocol callback panicked");
        }
    }

    /// True while a protocol callback runs.
    fn in_callback(&self) -> bool {
        self.protocol.try_borrow_mut().is_err()
    }

    fn set_interest(&self, r: &Reactor, child_fd: RawFd) {
        let (reg, interest) = {
            let st = self.st.borrow();
            let Some(p) = st.pipes.get(&child_fd) else {
                return;
            };
            let Some(reg) = p.reg else { return };
            let read = match p.dir {
                Dir::Read => p.reading,
                Dir::Write => true,
            };
            (
                reg,
                Interest {
                    read,
                    write: p.writing,
                },
            )
        };
        if let Err(e) = r.set_interest(&reg, interest) {
            tracing::warn!(pid = self.pid, fd = child_fd, error = %e, "cannot watch a child's pipe; closing it");
            self.close_pipe_deferred(r, child_fd);
        }
    }

    /// Closes the pipe of the child's `child_fd` now (its buffer dropped), and reports it.
    fn close_pipe(&self, r: &Reactor, child_fd: RawFd) {
        self.close_pipe_with(r, child_fd, false);
    }

    /// As `close_pipe`, for a close the user asked for (a transport method): the report comes
    /// later, on the loop, never inside the user's call.
    fn close_pipe_deferred(&self, r: &Reactor, child_fd: RawFd) {
        self.close_pipe_with(r, child_fd, true);
    }

    fn close_pipe_with(&self, r: &Reactor, child_fd: RawFd, defer: bool) {
        let Some(mut pipe) = self.st.borrow_mut().pipes.remove(&child_fd) else {
            return;
        };
        if let Some(reg) = pipe.reg.take() {
            r.deregister(&reg);
        }
        let producer = pipe.flow.take();
        drop(pipe);
        if let Some(p) = producer {
            p.stop_producing();
        }
        self.st.borrow_mut().lost.push(child_fd);
        if defer {
            self.queue_delivery(r);
        } else {
            self.deliver_lost(r);
        }
    }

    /// Queues a call that delivers the pending reports (once).
    fn queue_delivery(&self, r: &Reactor) {
        let queue = !std::mem::replace(&mut self.st.borrow_mut().drain_queued, true);
        if queue {
            let me = self.rc();
            r.call_soon(move |r| {
                me.st.borrow_mut().drain_queued = false;
                me.deliver_lost(r);
            });
        }
    }

    /// Delivers the pending `child_connection_lost` calls, and `process_ended` when due; later
    /// on the loop when a callback is running.
    fn deliver_lost(&self, r: &Reactor) {
        if self.in_callback() {
            self.queue_delivery(r);
            return;
        }
        loop {
            let next = {
                let mut st = self.st.borrow_mut();
                if st.lost.is_empty() {
                    None
                } else {
                    Some(st.lost.remove(0))
                }
            };
            let Some(fd) = next else { break };
            self.with_protocol(r, |p, cx| p.child_connection_lost(cx, fd));
        }
        self.maybe_end(r);
    }

    /// `process_ended` once the child exited, that was told, and every pipe is closed and
    /// told.
    fn maybe_end(&self, r: &Reactor) {
        let status = {
            let mut st = self.st.borrow_mut();
            match st.status {
                Some(s)
                    if st.exited_told && st.pipes.is_empty() && st.lost.is_empty() && !st.ended =>
                {
                    st.ended = true;
                    s
                }
                _ => return,
            }
        };
        if self.in_callback() {
            // Deliveries run with the protocol free; should one not, it is retried later.
            self.st.borrow_mut().ended = false;
            self.queue_delivery(r);
            return;
        }
        self.with_protocol(r, |p, cx| p.process_ended(cx, status));
        // The last callback: the protocol goes (breaking a protocol -> transport cycle).
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
    }

    /// The pidfd is readable: reap the child.
    fn reap(&self, r: &Reactor) {
        let status = match sys::try_wait(self.pid) {
            Ok(None) => return,
            Ok(Some(w)) => ExitStatus::from_wait(w),
            Err(e) => {
                // Someone else reaped it (a `waitpid(-1)` elsewhere in the program).
                tracing::warn!(pid = self.pid, error = %e, "a child was reaped by someone else; its status is lost");
                ExitStatus::Exited(-1)
            }
        };
        self.exited(r, status);
    }

    /// Records the status, drops the pidfd, reports `process_exited` (and `process_ended` if
    /// due).
    fn exited(&self, r: &Reactor, status: ExitStatus) {
        super::unreaped().remove(&self.pid);
        if let Some(reg) = self.pid_reg.take() {
            r.deregister(&reg);
        }
        drop(self.pidfd.borrow_mut().take());
        self.st.borrow_mut().status = Some(status);
        self.with_protocol(r, |p, cx| p.process_exited(cx, status));
        self.st.borrow_mut().exited_told = true;
        self.deliver_lost(r);
    }

    fn on_readable(&self, r: &Reactor, child_fd: RawFd) {
        let (dir, fd) = {
            let st = self.st.borrow();
            match st.pipes.get(&child_fd) {
                Some(p) => (p.dir, p.fd.as_raw_fd()),
                None => return,
            }
        };
        if dir == Dir::Write {
            // A pipe's write end reports readable only for an error: the reader is gone.
            self.close_pipe(r, child_fd);
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        match sys::read_fd(fd, &mut buf) {
            Ok(0) => self.close_pipe(r, child_fd),
            Ok(n) => {
                self.with_protocol(r, |p, cx| p.child_data_received(cx, child_fd, &buf[..n]));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.close_pipe(r, child_fd),
        }
    }

    fn on_writable(&self, r: &Reactor, child_fd: RawFd) {
        let (result, resume, pull, close, stop_writing) = {
            let mut st = self.st.borrow_mut();
            let Some(p) = st.pipes.get_mut(&child_fd) else {
                return;
            };
            let fd = p.fd.as_raw_fd();
            let result = p.buf.flush_pipe(fd);
            let empty = p.buf.is_empty();
            let resume = p.flow.resume_if_under(p.buf.len());
            let pull = if empty { p.flow.pull() } else { None };
            let close = empty && p.closing && !p.flow.is_registered();
            let stop_writing = empty && pull.is_none() && p.writing;
            if stop_writing {
                p.writing = false;
            }
            (result, resume, pull, close, stop_writing)
        };
        match result {
            Err(_) => {
                self.close_pipe(r, child_fd);
                return;
            }
            Ok(Flush::WouldBlock) | Ok(Flush::Empty) => {}
        }
        if close {
            self.close_pipe(r, child_fd);
            return;
        }
        if stop_writing {
            self.set_interest(r, child_fd);
        }
        if let Some(p) = resume {
            p.resume_producing();
        }
        if let Some(p) = pull {
            p.resume_producing();
        }
    }

    fn write_parts(&self, child_fd: RawFd, data: &[&[u8]]) {
        let Some(r) = self.reactor() else { return };
        let (need_writer, pause, failed) = {
            let mut st = self.st.borrow_mut();
            let Some(p) = st.pipes.get_mut(&child_fd) else {
                return;
            };
            if p.dir != Dir::Write || p.closing {
                return;
            }
            let mut skip = 0;
            let mut failed = false;
            if p.buf.is_empty() {
                let fd = p.fd.as_raw_fd();
                let sent = match data {
                    [one] => sys::write_fd(fd, one),
                    _ => sys::writev_fd(fd, data),
                };
                match sent {
                    Ok(n) => skip = n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => failed = true,
                }
            }
            if !failed {
                for d in data {
                    if skip >= d.len() {
                        skip -= d.len();
                    } else {
                        p.buf.push(&d[skip..]);
                        skip = 0;
                    }
                }
            }
            let need_writer = (!p.buf.is_empty() || p.flow.wants_pull()) && !p.writing;
            if need_writer {
                p.writing = true;
            }
            let pause = p.flow.pause_if_over(p.buf.len());
            (need_writer, pause, failed)
        };
        if failed {
            self.close_pipe_deferred(&r, child_fd);
            return;
        }
        if need_writer {
            self.set_interest(&r, child_fd);
        }
        if let Some(p) = pause {
            p.pause_producing();
        }
    }

    /// Closes a pipe the way `close_child_fd` does: readers now, writers once flushed.
    fn close_gracefully(&self, r: &Reactor, child_fd: RawFd) {
        let now = {
            let mut st = self.st.borrow_mut();
            let Some(p) = st.pipes.get_mut(&child_fd) else {
                return;
            };
            match p.dir {
                Dir::Read => true,
                Dir::Write => {
                    p.closing = true;
                    p.buf.is_empty() && !p.flow.is_registered()
                }
            }
        };
        if now {
            self.close_pipe_deferred(r, child_fd);
        }
    }

    /// The reactor is shutting down (or dropped) with the child running.
    fn shutdown(&self, r: &Reactor) {
        self.pid_reg.set(None);
        let fds: Vec<RawFd> = self.st.borrow().pipes.keys().copied().collect();
        for fd in fds {
            self.close_pipe(r, fd);
        }
        if self.st.borrow().status.is_some() {
            return;
        }
        match self.on_shutdown {
            OnShutdown::Leave => {
                tracing::info!(pid = self.pid, "reactor shutdown: leaving a child running");
                drop(self.pidfd.borrow_mut().take());
                let protocol = self.protocol.borrow_mut().take();
                drop(protocol);
            }
            OnShutdown::Terminate { grace } => {
                let status = self.terminate(grace);
                self.exited(r, status);
            }
        }
    }

    /// SIGTERM, up to `grace` for it to end, SIGKILL; reaped.
    fn terminate(&self, grace: Duration) -> ExitStatus {
        let pidfd = self.pidfd.borrow().as_ref().map(|f| f.as_raw_fd());
        let send = |sig: i32| match pidfd {
            Some(fd) => sys::pidfd_send_signal(fd, sig),
            None => sys::kill_pid(self.pid, sig),
        };
        let _ = send(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_millis(1);
        loop {
            match sys::try_wait(self.pid) {
                Ok(Some(w)) => return ExitStatus::from_wait(w),
                Ok(None) => {}
                Err(_) => return ExitStatus::Exited(-1),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        tracing::warn!(
            pid = self.pid,
            "a child ignored SIGTERM at shutdown; killing it"
        );
        let _ = send(libc::SIGKILL);
        match sys::wait_blocking(self.pid) {
            Ok(w) => ExitStatus::from_wait(w),
            Err(_) => ExitStatus::Exited(-1),
        }
    }
}

impl FileDescriptor for PipeEnd {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.process.on_readable(reactor, self.child_fd);
        Ok(())
    }

    fn do_write(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.process.on_writable(reactor, self.child_fd);
        Ok(())
    }

    fn connection_lost(&self, reactor: &Reactor, _reason: Reason) {
        // The reactor dropped the registration (its shutdown): forget it, close the pipe.
        if let Some(p) = self.process.st.borrow_mut().pipes.get_mut(&self.child_fd) {
            p.reg = None;
        }
        self.process.close_pipe(reactor, self.child_fd);
    }
}

impl FileDescriptor for PidWatch {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.process.reap(reactor);
        Ok(())
    }

    fn connection_lost(&self, reactor: &Reactor, _reason: Reason) {
        self.process.shutdown(reactor);
    }
}

impl ProcessTransport {
    /// The child's process id; `None` once it has been reaped (the number may belong to
    /// another process then), as Twisted's `pid` attribute.
    pub fn pid(&self) -> Option<u32> {
        self.0.st.borrow().status.is_none().then_some(self.0.pid)
    }

    /// How the child ended, once it has.
    pub fn status(&self) -> Option<ExitStatus> {
        self.0.st.borrow().status
    }

    /// Writes to the child's stdin (descriptor 0 of the map, when it is [`ChildFd::Write`]).
    /// Buffered like a socket's writes; dropped once stdin is closed.
    pub fn write(&self, data: &[u8]) {
        self.0.write_parts(0, &[data]);
    }

    /// Writes several buffers to the child's stdin.
    pub fn write_sequence(&self, data: &[&[u8]]) {
        self.0.write_parts(0, data);
    }

    /// Writes to the child's descriptor `fd` (Twisted's `writeToChild`); dropped unless the
    /// map made it [`ChildFd::Write`] and it is open.
    #[doc(alias = "writeToChild")]
    pub fn write_to_child(&self, fd: RawFd, data: &[u8]) {
        self.0.write_parts(fd, &[data]);
    }

    /// Closes the child's stdin once what was written is flushed (the child reads end of
    /// file); `child_connection_lost(0)` follows.
    #[doc(alias = "closeStdin")]
    pub fn close_stdin(&self) {
        self.close_child_fd(0);
    }

    /// Closes the pipe of the child's descriptor `fd` (Twisted's `closeChildFD`): a pipe the
    /// parent reads at once, one it writes once flushed.
    #[doc(alias = "closeChildFD")]
    pub fn close_child_fd(&self, fd: RawFd) {
        if let Some(r) = self.0.reactor() {
            self.0.close_gracefully(&r, fd);
        }
    }

    /// Closes every pipe (Twisted's `loseConnection`): stdin once flushed, the others at once.
    /// The child is not signalled.
    pub fn lose_connection(&self) {
        let Some(r) = self.0.reactor() else { return };
        let fds: Vec<RawFd> = self.0.st.borrow().pipes.keys().copied().collect();
        for fd in fds {
            self.0.close_gracefully(&r, fd);
        }
    }

    /// Sends `signal` to the child (Twisted's `signalProcess`), through its pidfd, so never to
    /// another process that reused its pid.
    ///
    /// # Errors
    /// [`SignalError::ProcessExitedAlready`] once the child has exited (reaped, or a zombie
    /// about to be); [`SignalError::Io`] when the system refuses.
    #[doc(alias = "signalProcess")]
    pub fn signal_process(&self, signal: Signal) -> Result<(), SignalError> {
        if self.0.st.borrow().status.is_some() {
            return Err(SignalError::ProcessExitedAlready);
        }
        let pidfd = self.0.pidfd.borrow();
        let Some(fd) = pidfd.as_ref() else {
            return Err(SignalError::ProcessExitedAlready);
        };
        match sys::pidfd_send_signal(fd.as_raw_fd(), signal.number()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                Err(SignalError::ProcessExitedAlready)
            }
            Err(e) => Err(SignalError::Io(e)),
        }
    }

    /// Registers a producer that writes to the child's stdin (see
    /// [`Consumer`](crate::Consumer)): a streaming producer is paused while the stdin buffer
    /// is above its high-water mark.
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    pub fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Error> {
        let what = {
            let mut st = self.0.st.borrow_mut();
            match st.pipes.get_mut(&0).filter(|p| p.dir == Dir::Write) {
                Some(p) => {
                    let buffered = p.buf.len();
                    p.flow
                        .register(producer.clone(), streaming, false, buffered)?
                }
                None => flow::OnRegister::Stop,
            }
        };
        flow::tell(&producer, what);
        Ok(())
    }

    /// Unregisters stdin's producer; a pending `close_stdin` can then complete.
    pub fn unregister_producer(&self) {
        let Some(r) = self.0.reactor() else { return };
        let (old, close) = {
            let mut st = self.0.st.borrow_mut();
            match st.pipes.get_mut(&0) {
                Some(p) => (p.flow.take(), p.closing && p.buf.is_empty()),
                None => (None, false),
            }
        };
        drop(old);
        if close {
            self.0.close_pipe_deferred(&r, 0);
        }
    }

    /// Bytes waiting in stdin's write buffer.
    pub fn buffered(&self) -> usize {
        self.0.st.borrow().pipes.get(&0).map_or(0, |p| p.buf.len())
    }

    /// Sets the high- and low-water marks of stdin's write buffer (defaults 64 KiB and
    /// 16 KiB).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        if let Some(p) = self.0.st.borrow_mut().pipes.get_mut(&0) {
            p.flow.set_limits(high, low);
        }
    }

    /// Stops reading the child's output pipes until
    /// [`resume_producing`](Self::resume_producing) (the child blocks once they fill).
    pub fn pause_producing(&self) {
        self.set_reading(false);
    }

    /// Reads the child's output again.
    pub fn resume_producing(&self) {
        self.set_reading(true);
    }

    fn set_reading(&self, on: bool) {
        let Some(r) = self.0.reactor() else { return };
        let fds: Vec<RawFd> = {
            let mut st = self.0.st.borrow_mut();
            st.paused = !on;
            st.pipes
                .iter_mut()
                .filter(|(_, p)| p.dir == Dir::Read && p.reading != on)
                .map(|(&fd, p)| {
                    p.reading = on;
                    fd
                })
                .collect()
        };
        for fd in fds {
            self.0.set_interest(&r, fd);
        }
    }

    /// The child's descriptors whose pipes are still open.
    pub fn open_child_fds(&self) -> Vec<RawFd> {
        self.0.st.borrow().pipes.keys().copied().collect()
    }

    /// True while the child's stdin pipe is open and not closing.
    pub fn stdin_open(&self) -> bool {
        self.0
            .st
            .borrow()
            .pipes
            .get(&0)
            .is_some_and(|p| p.dir == Dir::Write && !p.closing)
    }
}
