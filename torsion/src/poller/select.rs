//! The select(2) backend: descriptors below `FD_SETSIZE` only, refused clearly above it.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{interrupted_ok, Event, FdOutOfRange, Interest, Poller, Token, Trigger};
use crate::sys::{self, FdSet, FD_SETSIZE};

/// Invariant: `slots[fd]` is `Some` exactly for registered descriptors, and `max_fd` is the
/// largest registered descriptor (or -1).
pub(super) struct SelectPoller {
    slots: Vec<Option<(Token, Interest)>>,
    max_fd: RawFd,
}

impl SelectPoller {
    pub(super) fn new() -> SelectPoller {
        SelectPoller {
            slots: vec![None; FD_SETSIZE as usize],
            max_fd: -1,
        }
    }

    fn slot(&mut self, fd: RawFd) -> io::Result<&mut Option<(Token, Interest)>> {
        if !(0..FD_SETSIZE).contains(&fd) {
            return Err(FdOutOfRange {
                fd,
                limit: FD_SETSIZE,
                backend: "select",
            }
            .into());
        }
        Ok(&mut self.slots[fd as usize])
    }
}

impl Poller for SelectPoller {
    fn name(&self) -> &'static str {
        "select"
    }

    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        _: Trigger,
    ) -> io::Result<()> {
        let slot = self.slot(fd)?;
        if slot.is_some() {
            return Err(sys::errno(sys::EEXIST));
        }
        *slot = Some((token, interest));
        self.max_fd = self.max_fd.max(fd);
        Ok(())
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        _: Trigger,
    ) -> io::Result<()> {
        let slot = self.slot(fd)?;
        match slot {
            Some(s) => *s = (token, interest),
            None => return Err(sys::errno(sys::ENOENT)),
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let slot = match self.slot(fd) {
            Ok(s) => s,
            Err(_) => return Err(sys::errno(sys::ENOENT)),
        };
        if slot.take().is_none() {
            return Err(sys::errno(sys::ENOENT));
        }
        while self.max_fd >= 0 && self.slots[self.max_fd as usize].is_none() {
            self.max_fd -= 1;
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let (mut rd, mut wr) = (FdSet::new(), FdSet::new());
        let live = &self.slots[..(self.max_fd + 1) as usize];
        for (fd, slot) in live.iter().enumerate() {
            if let Some((_, interest)) = slot {
                if interest.read {
                    rd.insert(fd as RawFd);
                }
                if interest.write {
                    wr.insert(fd as RawFd);
                }
            }
        }
        let n = match interrupted_ok(sys::pselect(self.max_fd + 1, &mut rd, &mut wr, timeout)) {
            Err(e) if e.raw_os_error() == Some(sys::EBADF) => {
                // A registered descriptor was closed before it was deregistered. Report the
                // closed ones as hung up (as poll(2) does with POLLNVAL), so that the reactor
                // drops them, instead of failing the whole loop.
                for (fd, slot) in live.iter().enumerate() {
                    if let Some((token, _)) = slot {
                        if !sys::fd_is_open(fd as RawFd) {
                            events.push(Event {
                                token: *token,
                                readable: false,
                                writable: false,
                                hangup: true,
                                read_closed: false,
                                priority: false,
                            });
                        }
                    }
                }
                return Ok(());
            }
            other => other?,
        };
        if n == 0 {
            return Ok(());
        }
        for (fd, slot) in live.iter().enumerate() {
            if let Some((token, _)) = slot {
                let (r, w) = (rd.contains(fd as RawFd), wr.contains(fd as RawFd));
                if r || w {
                    events.push(Event {
                        token: *token,
                        readable: r,
                        writable: w,
                        hangup: false,
                        read_closed: false,
                        priority: false,
                    });
                }
            }
        }
        Ok(())
    }
}
