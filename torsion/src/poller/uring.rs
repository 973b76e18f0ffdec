//! The io_uring backend: readiness through `IORING_OP_POLL_ADD`, one submission per wait.
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

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Event, Interest, Poller, Token, Trigger};
use crate::sys::{self, uring as u};

/// Submission slots; a full queue is submitted early, so this bounds nothing but batching.
const SQ_ENTRIES: u32 = 256;
/// Completion slots (the kernel keeps any overflow, `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 4096;
/// The `user_data` of removal requests, whose completions say nothing we need.
const REMOVAL: u64 = u64::MAX;

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
    ring: u::Ring,
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
            ring: u::Ring::new(SQ_ENTRIES, CQ_ENTRIES)?,
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
            self.ring.push_poll_remove(old, REMOVAL)?;
        }
        Ok(())
    }

    fn arm_queued(&mut self) -> io::Result<()> {
        let mut i = 0;
        while i < self.to_arm.len() {
            let fd = self.to_arm[i];
            i += 1;
            let Some(r) = self.regs.get_mut(&fd) else {
                continue;
            };
            r.queued = false;
            if r.armed {
                continue;
            }
            r.armed = true;
            let (mask, multi) = (mask(r.interest, r.trigger), r.trigger == Trigger::Edge);
            let ud = user_data(fd, r.generation);
            if let Err(e) = self.ring.push_poll_add(fd, mask, multi, ud) {
                // Not queued: keep it (and the rest) for the next call.
                if let Some(r) = self.regs.get_mut(&fd) {
                    r.armed = false;
                }
                self.to_arm.drain(..i - 1);
                for fd in &self.to_arm {
                    if let Some(r) = self.regs.get_mut(fd) {
                        r.queued = true;
                    }
                }
                return Err(e);
            }
        }
        self.to_arm.clear();
        Ok(())
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
            self.ring
                .push_poll_remove(user_data(fd, r.generation), REMOVAL)?;
            // The request holds the open file: let it go before the owner closes the fd.
            self.ring.submit_now()?;
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.polls += 1;
        self.arm_queued()?;
        self.ring.submit_and_wait(timeout)?;
        let polls = self.polls;
        let regs = &mut self.regs;
        let to_arm = &mut self.to_arm;
        self.ring.drain(|c| {
            if c.user_data == REMOVAL {
                return;
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
