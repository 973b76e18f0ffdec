//! The poll(2) backend: no descriptor limit; each wait scans every registered descriptor.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{interrupted_ok, Event, Interest, Poller, Token, Trigger};
use crate::sys::{self, PollEvents, PollFd};

/// Invariant: `fds[i]` and `tokens[i]` describe the same registration, and `index[fd] == i`.
pub(super) struct PollPoller {
    fds: Vec<PollFd>,
    tokens: Vec<Token>,
    index: HashMap<RawFd, usize>,
}

impl PollPoller {
    pub(super) fn new() -> PollPoller {
        PollPoller {
            fds: Vec::new(),
            tokens: Vec::new(),
            index: HashMap::new(),
        }
    }
}

fn flags(interest: Interest) -> PollEvents {
    let mut f = 0;
    if interest.read {
        f |= sys::POLLIN | sys::POLLRDHUP;
    }
    if interest.write {
        f |= sys::POLLOUT;
    }
    f
}

impl Poller for PollPoller {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        _: Trigger,
    ) -> io::Result<()> {
        if fd < 0 {
            return Err(sys::errno(sys::EBADF));
        }
        if self.index.contains_key(&fd) {
            return Err(sys::errno(sys::EEXIST));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(sys::pollfd(fd, flags(interest)));
        self.tokens.push(token);
        Ok(())
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        _: Trigger,
    ) -> io::Result<()> {
        let i = *self.index.get(&fd).ok_or_else(|| sys::errno(sys::ENOENT))?;
        self.fds[i].events = flags(interest);
        self.tokens[i] = token;
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self
            .index
            .remove(&fd)
            .ok_or_else(|| sys::errno(sys::ENOENT))?;
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(moved) = self.fds.get(i) {
            self.index.insert(moved.fd, i);
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let mut ready = interrupted_ok(sys::ppoll(&mut self.fds, timeout))?;
        for (pfd, &token) in self.fds.iter_mut().zip(&self.tokens) {
            if ready == 0 {
                break;
            }
            let r = std::mem::replace(&mut pfd.revents, 0);
            if r == 0 {
                continue;
            }
            ready -= 1;
            events.push(Event {
                token,
                readable: r & (sys::POLLIN | sys::POLLRDHUP) != 0,
                writable: r & sys::POLLOUT != 0,
                hangup: r & (sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) != 0,
                read_closed: r & sys::POLLRDHUP != 0,
                priority: false,
            });
        }
        Ok(())
    }
}
