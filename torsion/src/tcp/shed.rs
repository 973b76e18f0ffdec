//! What a listener does when the process runs out of descriptors, shared by TCP and Unix
//! listeners: a spare descriptor is closed to accept and drop the clients waiting in the
//! queue (so the listener does not spin on a readable socket it cannot serve, and the
//! clients learn at once instead of timing out), then taken again.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;

/// How often at most a listener warns that it is shedding clients.
const SHED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A listener's spare descriptor and its count of clients shed.
pub(crate) struct Shedder {
    /// The spare descriptor (`/dev/null`), held while the listener listens.
    reserve: RefCell<Option<File>>,
    shed: Cell<u64>,
    /// Clients shed since the last warning, and when it was logged.
    unreported: Cell<u64>,
    last_warning: Cell<Option<Instant>>,
}

impl Shedder {
    /// A shedder holding its spare descriptor (none if even that cannot be opened).
    pub(crate) fn new() -> Shedder {
        Shedder {
            reserve: RefCell::new(File::open("/dev/null").ok()),
            shed: Cell::new(0),
            unreported: Cell::new(0),
            last_warning: Cell::new(None),
        }
    }

    /// Clients shed so far.
    pub(crate) fn shed(&self) -> u64 {
        self.shed.get()
    }

    /// Lets the spare descriptor go (the listener stopped).
    pub(crate) fn release(&self) {
        self.reserve.borrow_mut().take();
    }

    /// Takes a spare descriptor again if the listener has none (after a pause).
    pub(crate) fn restore(&self) {
        if self.reserve.borrow().is_none() {
            *self.reserve.borrow_mut() = File::open("/dev/null").ok();
        }
    }

    /// Out of descriptors: closes the spare one, accepts (with `accept`) and drops up to
    /// `budget` waiting clients, then takes the spare again. Returns false when there was no
    /// spare, or it could not be taken back: the listener should then pause its accepts.
    ///
    /// A shed TCP client is reset, not closed cleanly, so that it cannot take the empty
    /// connection for an empty reply.
    pub(crate) fn shed_pending(
        &self,
        addr: &dyn Display,
        budget: usize,
        mut accept: impl FnMut() -> io::Result<OwnedFd>,
    ) -> bool {
        let Some(spare) = self.reserve.borrow_mut().take() else {
            return false;
        };
        drop(spare);
        let mut now_shed = 0;
        for _ in 0..budget {
            match accept() {
                Ok(c) => {
                    // Fails harmlessly on a Unix socket, whose close is its only end.
                    let _ = sys::set_linger_zero(c.as_raw_fd());
                    drop(c);
                    now_shed += 1;
                }
                Err(_) => break,
            }
        }
        self.shed.set(self.shed.get() + now_shed);
        self.warn(addr, now_shed);
        self.restore();
        self.reserve.borrow().is_some()
    }

    /// One warning per [`SHED_WARNING_EVERY`] at most while clients are being shed.
    fn warn(&self, addr: &dyn Display, now_shed: u64) {
        self.unreported.set(self.unreported.get() + now_shed);
        let due = self
            .last_warning
            .get()
            .is_none_or(|t| t.elapsed() >= SHED_WARNING_EVERY);
        if due && self.unreported.get() > 0 {
            tracing::warn!(
                %addr,
                clients = self.unreported.get(),
                total = self.shed.get(),
                "out of file descriptors: shedding pending clients unserved"
            );
            self.unreported.set(0);
            self.last_warning.set(Some(Instant::now()));
        }
    }
}
