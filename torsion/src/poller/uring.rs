//! The io_uring backend: readiness through `IORING_OP_POLL_ADD`, one submission per wait, and
//! the [`Port`] through which torsion's TCP transport runs socket operations on the same ring
//! (their completions are filed by [`Poller::poll`] and dispatched by the reactor after the
//! readiness events; see `tcp/completion.rs`).
//!
//! Operations carry their own `user_data` layout: bit 63 set (readiness requests never have
//! it), bits 62 and 61 for SENDs and ACCEPTs (the ring gives their bytes and descriptors back
//! with the completion), a generation and a slot of [`Shared::ops`], which names the target
//! (held weakly: a completion for a transport already gone is dropped, its buffer given back
//! and its descriptor closed).
//!
//! * A level-triggered registration is a one-shot poll request. When it completes its event is
//!   reported and the request is armed again at the start of the next [`poll`](Poller::poll),
//!   in the same `io_uring_enter` that waits: the kernel checks readiness when it takes the
//!   request, so a descriptor still ready is reported again by that very wait (exact level
//!   semantics, as `add_reader`/`add_writer` users expect).
//! * The backend reports every registration level-triggered ([`Poller::edge_triggered`] is
//!   false), so torsion's transports, which ask for [`Trigger::Edge`], get one-shot requests
//!   too. A multishot poll request (the edge-triggered mode, kept behind a constructor flag and
//!   tested) reports each wake-up from the mask the wake-up carried, without checking the
//!   socket again: a transport then reads once more after draining and meets `EAGAIN` (half
//!   of its `recv`s in a 100-connection ping-pong). A one-shot request re-armed in the same
//!   `io_uring_enter` costs no system call and is checked by the kernel when armed.
//!   In the multishot mode an edge-triggered registration is one completion per arrival of
//!   readiness, and one when it is made or changed while the descriptor is ready, armed again
//!   only if the kernel ends it.
//! * The wait's timeout is the ring's own (`IORING_ENTER_EXT_ARG`); the reactor's waker is an
//!   eventfd registered like any descriptor, so it, too, is a poll request on the ring.
//!
//! Each request carries its descriptor and a generation number in its `user_data`; changing or
//! ending a registration starts a new generation, so a completion of a request that was
//! cancelled (or of an earlier owner of a reused descriptor number) is recognised and dropped.
//! Ending a registration submits the removal at once: a poll request holds a reference to the
//! open file, which must be gone before the owner closes the descriptor and expects the peer to
//! see it.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{Event, Interest, Poller, Token, Trigger};
use crate::sys::{self, uring as u};
use crate::Reactor;

/// Submission slots; a full queue is submitted early, so this bounds nothing but batching.
const SQ_ENTRIES: u32 = 256;
/// Completion slots (the kernel keeps any overflow, `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 4096;
/// The `user_data` of removal requests, whose completions say nothing we need.
const REMOVAL: u64 = u64::MAX;
/// Provided buffers per reactor, by default.
pub(crate) const DEFAULT_BUFFERS: u16 = 1024;
/// Bytes per provided buffer, by default (with `DEFAULT_BUFFERS`, 16 MiB of address space per
/// reactor, touched as it is used).
pub(crate) const DEFAULT_BUFFER_SIZE: u32 = 16 * 1024;

#[derive(Debug)]
struct Reg {
    token: Token,
    interest: Interest,
    trigger: Trigger,
    /// Generation of the current poll request (in its `user_data`).
    generation: u32,
    /// A poll request of this generation is with the kernel (or queued for it).
    armed: bool,
    /// Waits in `to_arm`.
    queued: bool,
    /// The `poll` call (by count) that last reported it, and where in `events`.
    reported: u64,
    slot: usize,
}

pub(super) struct UringPoller {
    /// The ring and the socket operations in flight, shared with the reactor's [`Port`].
    shared: Rc<RefCell<Shared>>,
    /// Honour [`Trigger::Edge`] with multishot poll requests; otherwise every registration is
    /// level-triggered (one-shot requests re-armed by the next wait).
    edge: bool,
    /// Registrations by descriptor number (descriptors are small integers: a slot per number,
    /// no hashing on the way from a completion to its registration).
    regs: Regs,
    /// Registrations whose poll request is to be armed by the next `poll`.
    to_arm: Vec<RawFd>,
    next_generation: u32,
    polls: u64,
}

impl UringPoller {
    /// A poller; `edge` makes [`Trigger::Edge`] registrations multishot poll requests.
    pub(super) fn new(edge: bool) -> io::Result<UringPoller> {
        Ok(UringPoller {
            shared: Rc::new(RefCell::new(Shared {
                ring: u::Ring::new(SQ_ENTRIES, CQ_ENTRIES)?,
                ops: Vec::new(),
                free: Vec::new(),
                done: Vec::new(),
            })),
            edge,
            regs: Regs::default(),
            to_arm: Vec::new(),
            next_generation: 0,
            polls: 0,
        })
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Queues the (re-)arming of `fd`'s poll request.
    fn queue(&mut self, fd: RawFd) {
        if let Some(r) = self.regs.get_mut(&fd) {
            if !r.queued {
                r.queued = true;
                self.to_arm.push(fd);
            }
        }
    }

    /// The completion port of this poller's ring, with a provided-buffer ring set up
    /// (`count` buffers of `size` bytes).
    ///
    /// # Errors
    /// The system error when the buffer ring cannot be set up (a kernel before 5.19).
    pub(super) fn port(&self, count: u16, size: u32) -> io::Result<Port> {
        self.shared.borrow_mut().ring.setup_buffers(count, size)?;
        Ok(Port {
            shared: self.shared.clone(),
        })
    }

    /// Cancels `fd`'s poll request in flight, if any, and starts a new generation.
    fn cancel(&mut self, fd: RawFd) -> io::Result<()> {
        let generation = self.generation();
        let Some(r) = self.regs.get_mut(&fd) else {
            return Ok(());
        };
        let old = user_data(fd, r.generation);
        let was_armed = std::mem::replace(&mut r.armed, false);
        r.generation = generation;
        if was_armed {
            self.shared
                .borrow_mut()
                .ring
                .push_poll_remove(old, REMOVAL)?;
        }
        Ok(())
    }

    /// Arms the poll requests queued in `to_arm` (a function of the fields it needs, so that
    /// `poll` can call it while it holds the ring).
    fn arm_queued(regs: &mut Regs, to_arm: &mut Vec<RawFd>, ring: &mut u::Ring) -> io::Result<()> {
        let mut i = 0;
        while i < to_arm.len() {
            let fd = to_arm[i];
            i += 1;
            let Some(r) = regs.get_mut(&fd) else {
                continue;
            };
            r.queued = false;
            if r.armed {
                continue;
            }
            r.armed = true;
            let (mask, multi) = (mask(r.interest, r.trigger), r.trigger == Trigger::Edge);
            let ud = user_data(fd, r.generation);
            if let Err(e) = ring.push_poll_add(fd, mask, multi, ud) {
                // Not queued: keep it (and the rest) for the next call.
                if let Some(r) = regs.get_mut(&fd) {
                    r.armed = false;
                }
                to_arm.drain(..i - 1);
                for fd in to_arm.iter() {
                    if let Some(r) = regs.get_mut(fd) {
                        r.queued = true;
                    }
                }
                return Err(e);
            }
        }
        to_arm.clear();
        Ok(())
    }
}

/// The ring, and the socket operations in flight on it (completion mode).
struct Shared {
    ring: u::Ring,
    /// Operations by slot (the low 32 bits of their `user_data`).
    ops: Vec<OpSlot>,
    /// Free slots of `ops`.
    free: Vec<u32>,
    /// Completions taken from the ring, waiting to be dispatched by the reactor.
    done: Vec<Done>,
}

struct OpSlot {
    /// Bumped when the slot is freed (the 30 bits above the slot in `user_data`).
    generation: u32,
    /// Whom its completions go to; `None` when the slot is free.
    target: Option<Weak<dyn OpTarget>>,
}

/// Generation bits in an operation's `user_data` (bits 32 to 60; 61 to 63 are tags).
const GENERATION_MASK: u64 = 0x1fff_ffff;

/// The `user_data` of a socket operation: the tags, a generation and a slot.
fn op_user_data(slot: u32, generation: u32, tag: u64) -> u64 {
    u::OP_TAG | tag | ((u64::from(generation) & GENERATION_MASK) << 32) | u64::from(slot)
}

/// Files one socket operation's completion for dispatch; frees its slot with the last one.
fn op_completed(ops: &mut [OpSlot], free: &mut Vec<u32>, done: &mut Vec<Done>, c: u::Completion) {
    let slot = (c.user_data & 0xffff_ffff) as u32;
    let Some(s) = ops.get_mut(slot as usize) else {
        return;
    };
    if u64::from(s.generation) & GENERATION_MASK != (c.user_data >> 32) & GENERATION_MASK {
        return; // not this slot's operation any more (cannot happen: slots outlive their ops)
    }
    let Some(target) = s.target.clone() else {
        return;
    };
    if !c.more {
        s.target = None;
        s.generation = s.generation.wrapping_add(1);
        free.push(slot);
    }
    done.push(Done {
        target,
        op: c.user_data,
        result: c.result,
        more: c.more,
        buffer: c.buffer,
        send: c.send,
        accepted: c.accepted,
    });
}

/// One completion of a socket operation, for its target.
pub(crate) struct Done {
    target: Weak<dyn OpTarget>,
    /// The operation ([`Port::recv`] and the others return it).
    pub(crate) op: u64,
    /// Bytes received or sent, a new descriptor, or `-errno`.
    pub(crate) result: i32,
    /// More completions follow for this (multishot) operation.
    pub(crate) more: bool,
    /// The provided buffer a receive filled (back to the ring when dropped).
    pub(crate) buffer: Option<u::Taken>,
    /// A SEND's bytes, back with its completion.
    pub(crate) send: Option<u::SendOp>,
    /// The connection an ACCEPT created (closed when dropped untaken).
    pub(crate) accepted: Option<std::os::fd::OwnedFd>,
}

/// Whatever owns socket operations on the ring: told of each completion by the reactor.
pub(crate) trait OpTarget {
    /// One completion of an operation it started (taken by reference, so that the records
    /// are not copied around: take what it carries out of it).
    fn complete(&self, r: &Reactor, done: &mut Done);

    /// Called by the reactor before it waits, when the target asked with
    /// [`Port::before_poll`]: queue the SENDs of what was written this iteration.
    fn before_poll(&self, r: &Reactor);
}

/// The reactor's side of the io_uring ring: socket operations whose completions (not
/// readiness) drive torsion's TCP transport.
#[derive(Clone)]
pub(crate) struct Port {
    shared: Rc<RefCell<Shared>>,
}

impl Port {
    fn start(
        &self,
        target: Weak<dyn OpTarget>,
        tag: u64,
        push: impl FnOnce(&mut u::Ring, u64) -> io::Result<()>,
    ) -> io::Result<u64> {
        let mut sh = self.shared.borrow_mut();
        let slot = match sh.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(sh.ops.len())
                    .map_err(|_| io::Error::other("too many operations"))?;
                sh.ops.push(OpSlot {
                    generation: 0,
                    target: None,
                });
                s
            }
        };
        let ud = op_user_data(slot, sh.ops[slot as usize].generation, tag);
        match push(&mut sh.ring, ud) {
            Ok(()) => {
                sh.ops[slot as usize].target = Some(target);
                Ok(ud)
            }
            Err(e) => {
                sh.free.push(slot);
                Err(e)
            }
        }
    }

    /// Starts a multishot receive on `fd` into the provided-buffer ring.
    pub(crate) fn recv(&self, fd: RawFd, target: Weak<dyn OpTarget>) -> io::Result<u64> {
        self.start(target, 0, |ring, ud| ring.push_recv_multi(fd, ud))
    }

    /// Starts a multishot accept on the listening socket `fd`.
    pub(crate) fn accept(&self, fd: RawFd, target: Weak<dyn OpTarget>) -> io::Result<u64> {
        self.start(target, u::ACCEPT_TAG, |ring, ud| {
            ring.push_accept_multi(fd, ud)
        })
    }

    /// Starts a SEND of `op` on `fd`.
    ///
    /// # Errors
    /// The system error; the bytes are handed back with it.
    pub(crate) fn send(
        &self,
        fd: RawFd,
        op: u::SendOp,
        target: Weak<dyn OpTarget>,
    ) -> Result<u64, (io::Error, Option<u::SendOp>)> {
        let mut op = Some(op);
        self.start(target, u::SEND_TAG, |ring, ud| {
            ring.push_send(fd, op.take().expect("pushed once"), ud)
        })
        .map_err(|e| (e, op))
    }

    /// Cancels the operation `op` (its last completion is ECANCELED unless it finished).
    pub(crate) fn cancel(&self, op: u64) {
        let mut sh = self.shared.borrow_mut();
        if let Err(e) = sh.ring.push_cancel(op, REMOVAL) {
            tracing::warn!(error = %e, "cannot queue an io_uring cancellation");
        }
    }

    /// Hands the queued requests to the kernel now.
    pub(crate) fn submit(&self) {
        if let Err(e) = self.shared.borrow_mut().ring.submit_now() {
            tracing::warn!(error = %e, "cannot submit io_uring requests");
        }
    }

    /// Takes the completions waiting for dispatch.
    pub(crate) fn take_done(&self, into: &mut Vec<Done>) {
        std::mem::swap(&mut self.shared.borrow_mut().done, into);
    }
}

impl Done {
    /// Whom it goes to, if still alive.
    pub(crate) fn target(&self) -> Option<Rc<dyn OpTarget>> {
        self.target.upgrade()
    }
}

/// Registrations indexed by descriptor number.
#[derive(Debug, Default)]
struct Regs(Vec<Option<Reg>>);

impl Regs {
    fn get_mut(&mut self, fd: &RawFd) -> Option<&mut Reg> {
        let i = usize::try_from(*fd).ok()?;
        self.0.get_mut(i)?.as_mut()
    }

    fn contains_key(&self, fd: &RawFd) -> bool {
        usize::try_from(*fd)
            .ok()
            .and_then(|i| self.0.get(i))
            .is_some_and(Option::is_some)
    }

    /// `fd` must be non-negative (`register` checks it).
    fn insert(&mut self, fd: RawFd, reg: Reg) {
        let i = usize::try_from(fd).expect("a checked descriptor");
        if self.0.len() <= i {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(reg);
    }

    fn remove(&mut self, fd: &RawFd) -> Option<Reg> {
        let i = usize::try_from(*fd).ok()?;
        self.0.get_mut(i)?.take()
    }
}

fn user_data(fd: RawFd, generation: u32) -> u64 {
    ((fd as u32 as u64) << 32) | generation as u64
}

fn mask(interest: Interest, trigger: Trigger) -> u32 {
    let mut m = 0;
    if interest.read {
        m |= u::U_POLLIN | u::U_POLLRDHUP;
        if trigger == Trigger::Edge {
            // As on epoll: urgent data stops a short read before the socket is drained.
            m |= u::U_POLLPRI;
        }
    }
    if interest.write {
        m |= u::U_POLLOUT;
    }
    m
}

impl Poller for UringPoller {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn edge_triggered(&self) -> bool {
        self.edge
    }

    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        if fd < 0 || !sys::fd_is_open(fd) {
            return Err(sys::errno(sys::EBADF));
        }
        if self.regs.contains_key(&fd) {
            return Err(sys::errno(sys::EEXIST));
        }
        let trigger = if self.edge { trigger } else { Trigger::Level };
        let generation = self.generation();
        self.regs.insert(
            fd,
            Reg {
                token,
                interest,
                trigger,
                generation,
                armed: false,
                queued: false,
                reported: 0,
                slot: 0,
            },
        );
        self.queue(fd);
        Ok(())
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        if !self.regs.contains_key(&fd) {
            return Err(sys::errno(sys::ENOENT));
        }
        self.cancel(fd)?;
        let trigger = if self.edge { trigger } else { Trigger::Level };
        if let Some(r) = self.regs.get_mut(&fd) {
            r.token = token;
            r.interest = interest;
            r.trigger = trigger;
        }
        self.queue(fd);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(r) = self.regs.remove(&fd) else {
            return Err(sys::errno(sys::ENOENT));
        };
        if r.armed {
            let mut sh = self.shared.borrow_mut();
            sh.ring
                .push_poll_remove(user_data(fd, r.generation), REMOVAL)?;
            // The request holds the open file: let it go before the owner closes the fd.
            sh.ring.submit_now()?;
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.polls += 1;
        let mut guard = self.shared.borrow_mut();
        let sh = &mut *guard;
        Self::arm_queued(&mut self.regs, &mut self.to_arm, &mut sh.ring)?;
        let timeout = if sh.done.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        sh.ring.submit_and_wait(timeout)?;
        let polls = self.polls;
        let regs = &mut self.regs;
        let to_arm = &mut self.to_arm;
        let (ops, free, done) = (&mut sh.ops, &mut sh.free, &mut sh.done);
        sh.ring.drain(|c| {
            if c.user_data == REMOVAL {
                return;
            }
            if c.user_data & u::OP_TAG != 0 {
                return op_completed(ops, free, done, c);
            }
            let fd = (c.user_data >> 32) as u32 as RawFd;
            let Some(r) = regs.get_mut(&fd) else {
                return;
            };
            if r.generation != c.user_data as u32 {
                return; // a cancelled request's, or an earlier owner's
            }
            if !c.more {
                r.armed = false;
                if !r.queued {
                    r.queued = true;
                    to_arm.push(fd);
                }
            }
            let bits = if c.result == -libc::ECANCELED {
                return; // ended by the kernel, not ready: armed again
            } else if c.result < 0 {
                // The descriptor cannot be polled (closed without being deregistered): tell
                // the owner, whose read or write will meet the error.
                u::U_POLLERR | u::U_POLLNVAL
            } else {
                c.result as u32
            };
            let ev = Event {
                token: r.token,
                readable: bits & (u::U_POLLIN | u::U_POLLRDHUP) != 0
                    || (bits & (u::U_POLLERR | u::U_POLLNVAL) != 0 && r.interest.read),
                writable: bits & u::U_POLLOUT != 0
                    || (bits & (u::U_POLLERR | u::U_POLLNVAL) != 0 && r.interest.write),
                hangup: bits & (u::U_POLLHUP | u::U_POLLERR | u::U_POLLNVAL) != 0,
                read_closed: bits & u::U_POLLRDHUP != 0,
                priority: bits & u::U_POLLPRI != 0,
            };
            if r.reported == polls {
                // A second wake-up of a multishot request in one batch: one event per poll.
                let e = &mut events[r.slot];
                e.readable |= ev.readable;
                e.writable |= ev.writable;
                e.hangup |= ev.hangup;
                e.read_closed |= ev.read_closed;
                e.priority |= ev.priority;
            } else {
                r.reported = polls;
                r.slot = events.len();
                events.push(ev);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The multishot (edge-triggered) mode: one report per arrival, none for data still
    /// waiting, one when the registration changes while the descriptor is ready.
    #[test]
    fn multishot_mode_reports_each_arrival_once() {
        if !crate::Backend::IoUring.available() {
            return; // tests/uring.rs covers the refusal
        }
        let _serial = crate::testing::serial();
        let mut p = UringPoller::new(true).unwrap();
        assert!(p.edge_triggered());
        let (r, w) = crate::sys::pipe().unwrap();
        let (r, w) = (r.as_raw_fd(), w.as_raw_fd());
        p.register(r, 7, Interest::READ, Trigger::Edge).unwrap();
        let mut ev = Vec::new();
        let mut poll = |p: &mut UringPoller| {
            ev.clear();
            p.poll(&mut ev, Some(Duration::ZERO)).unwrap();
            ev.len()
        };
        assert_eq!(poll(&mut p), 0);
        crate::sys::write(w, b"x").unwrap();
        assert_eq!(poll(&mut p), 1);
        assert_eq!(poll(&mut p), 0, "not drained, but no new data");
        crate::sys::write(w, b"y").unwrap();
        assert_eq!(poll(&mut p), 1);
        assert_eq!(poll(&mut p), 0);
        p.reregister(r, 8, Interest::READ, Trigger::Edge).unwrap();
        assert_eq!(poll(&mut p), 1, "changed while ready");
        assert_eq!(poll(&mut p), 0);
        // Level registrations on the same poller stay level.
        p.reregister(r, 9, Interest::READ, Trigger::Level).unwrap();
        assert_eq!(poll(&mut p), 1);
        assert_eq!(poll(&mut p), 1);
        p.deregister(r).unwrap();
        assert_eq!(poll(&mut p), 0);
    }
}
