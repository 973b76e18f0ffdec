//! The epoll(7) backend: readiness cost proportional to the ready descriptors.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use super::{interrupted_ok, Event, Interest, Poller, Token};
use crate::sys::{self, EpollEvent};
use crate::Error;

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

fn flags(interest: Interest) -> u32 {
    let mut f = 0;
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

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> Result<(), Error> {
        sys::epoll_ctl(&self.ep, sys::EPOLL_CTL_ADD, fd, flags(interest), token)?;
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> Result<(), Error> {
        sys::epoll_ctl(&self.ep, sys::EPOLL_CTL_MOD, fd, flags(interest), token)?;
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
            }
        }));
        Ok(())
    }
}
