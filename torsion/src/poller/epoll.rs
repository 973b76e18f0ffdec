//! The epoll(7) backend: readiness cost proportional to the ready descriptors.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use super::{interrupted_ok, Event, Interest, Poller, Token, Trigger};
use crate::sys::{self, EpollEvent};

/// Events fetched per `epoll_wait`; more ready descriptors are reported by the next call.
const BATCH: usize = 1024;

pub(super) struct EpollPoller {
    ep: OwnedFd,
    buf: Vec<EpollEvent>,
    /// Cleared the first time the kernel lacks epoll_pwait2 (then timeouts round up to 1 ms).
    use_pwait2: bool,
}

impl EpollPoller {
    pub(super) fn new() -> io::Result<EpollPoller> {
        Ok(EpollPoller {
            ep: sys::epoll_create()?,
            buf: sys::epoll_events(BATCH),
            use_pwait2: true,
        })
    }
}

fn flags(interest: Interest, trigger: Trigger) -> u32 {
    let mut f = match trigger {
        Trigger::Level => 0,
        // Urgent data makes a short read stop at its mark before the socket is drained: an
        // edge-triggered owner must hear of it (EPOLLPRI) to read on.
        Trigger::Edge if interest.read => (sys::EPOLLET | sys::EPOLLPRI) as u32,
        Trigger::Edge => sys::EPOLLET as u32,
    };
    if interest.read {
        f |= (sys::EPOLLIN | sys::EPOLLRDHUP) as u32;
    }
    if interest.write {
        f |= sys::EPOLLOUT as u32;
    }
    f
}

impl Poller for EpollPoller {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn edge_triggered(&self) -> bool {
        true
    }

    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        let f = flags(interest, trigger);
        sys::epoll_ctl(&self.ep, sys::EPOLL_CTL_ADD, fd, f, token)?;
        Ok(())
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        // EPOLL_CTL_MOD re-checks readiness: an edge-triggered descriptor that is ready for the
        // new interest is reported by the next wait.
        let f = flags(interest, trigger);
        sys::epoll_ctl(&self.ep, sys::EPOLL_CTL_MOD, fd, f, token)?;
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        sys::epoll_ctl(&self.ep, sys::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let n = interrupted_ok(sys::epoll_wait(
            &self.ep,
            &mut self.buf,
            timeout,
            &mut self.use_pwait2,
        ))?;
        events.extend(self.buf[..n].iter().map(|ev| {
            let (bits, token) = sys::epoll_event_parts(ev);
            Event {
                token,
                readable: bits & (sys::EPOLLIN | sys::EPOLLRDHUP) as u32 != 0,
                writable: bits & sys::EPOLLOUT as u32 != 0,
                hangup: bits & (sys::EPOLLHUP | sys::EPOLLERR) as u32 != 0,
                read_closed: bits & sys::EPOLLRDHUP as u32 != 0,
                priority: bits & sys::EPOLLPRI as u32 != 0,
            }
        }));
        Ok(())
    }
}
