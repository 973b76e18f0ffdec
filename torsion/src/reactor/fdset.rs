//! Watching descriptors: registrations (the transports' interface) and Twisted's
//! `add_reader`/`add_writer` facade over them.

use std::os::fd::RawFd;
use std::rc::Rc;

use super::registry::Entry;
use super::Reactor;
use crate::error::Panicked;
use crate::poller::{Event, Interest, Token, Trigger};
use crate::{Error, Reason};

/// An object with a file descriptor that the reactor can watch (Twisted's `IReadDescriptor`,
/// `IWriteDescriptor` and `IFileDescriptor`).
///
/// Register it with [`Reactor::add_reader`] / [`Reactor::add_writer`] (Twisted's facade), or
/// with [`Reactor::register`] for a registration that lives until it is deregistered (what
/// transports use). Its methods take `&self` so that the reactor can call them while user code
/// holds other references: keep mutable state in `Cell`/`RefCell` fields.
///
/// # Examples
/// ```
/// use std::cell::RefCell;
/// use std::io::Read;
/// use std::os::fd::{AsRawFd, RawFd};
/// use std::os::unix::net::UnixStream;
/// use std::rc::Rc;
/// use torsion::{FileDescriptor, Reactor, Reason};
///
/// struct Reader { sock: RefCell<UnixStream>, got: RefCell<Vec<u8>> }
///
/// impl FileDescriptor for Reader {
///     fn fileno(&self) -> RawFd { self.sock.borrow().as_raw_fd() }
///     fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
///         let mut buf = [0u8; 1024];
///         match self.sock.borrow_mut().read(&mut buf) {
///             Ok(0) => Err(Reason::ConnectionDone),
///             Ok(n) => Ok(self.got.borrow_mut().extend_from_slice(&buf[..n])),
///             Err(e) => Err(Reason::lost(e)),
///         }
///     }
///     fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
///         assert!(reason.is_clean());
///         reactor.stop().unwrap();
///     }
/// }
///
/// let (mut ours, theirs) = UnixStream::pair()?;
/// theirs.set_nonblocking(true)?;
/// std::io::Write::write_all(&mut ours, b"hello")?;
/// drop(ours);
/// let reader = Rc::new(Reader { sock: RefCell::new(theirs), got: RefCell::default() });
/// let reactor = Reactor::new()?;
/// reactor.add_reader(reader.clone())?;
/// reactor.run()?;
/// assert_eq!(*reader.got.borrow(), b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait FileDescriptor {
    /// The descriptor to watch. It should stay the same while registered; once the descriptor
    /// is closed it may return -1 (Twisted's convention): the reactor then drops the
    /// registration with [`Reason::ConnectionLost`] instead of reading or writing it.
    fn fileno(&self) -> RawFd;

    /// Called when the descriptor is readable (or at EOF, or in error). Return `Err(reason)` to
    /// have the reactor remove the descriptor and call [`connection_lost`](Self::connection_lost).
    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        let _ = reactor;
        Ok(())
    }

    /// What the reactor calls for a readable event: `event` is the poller's report, and the
    /// result says whether the descriptor was drained. The default calls
    /// [`do_read`](Self::do_read) and reports [`Readiness::Drained`].
    ///
    /// A registration made edge-triggered ([`Trigger::Edge`]) gets no new report for data that
    /// was already waiting: it must read until the system call would block, or return
    /// [`Readiness::MoreWaiting`] to be read again on the next iteration.
    ///
    /// # Errors
    /// As [`do_read`](Self::do_read).
    fn do_read_event(&self, reactor: &Reactor, event: &Event) -> Result<Readiness, Reason> {
        let _ = event;
        self.do_read(reactor).map(|()| Readiness::Drained)
    }

    /// Called when the descriptor is writable. Errors are handled as for `do_read`.
    fn do_write(&self, reactor: &Reactor) -> Result<(), Reason> {
        let _ = reactor;
        Ok(())
    }

    /// Called once when the reactor drops the descriptor: a callback failed or panicked
    /// ([`Reason::Panicked`]), or the reactor shut down or was dropped
    /// ([`Reason::ReactorShutdown`]). The registration is already gone; closing the descriptor
    /// is up to the implementation.
    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        let _ = (reactor, reason);
    }
}

/// What a read left behind (see [`FileDescriptor::do_read_event`]): the one readiness rule
/// of the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The read stopped because the descriptor had nothing more (the call would block, a short
    /// read of a stream that proves it drained, or the end of the stream).
    Drained,
    /// The read stopped early (a budget ran out, a call was interrupted, a short read that
    /// proves nothing): an edge-triggered registration is read again on the next iteration,
    /// after the poller's events, at most once per iteration. A level-triggered registration is
    /// reported again by the poller anyway.
    MoreWaiting,
}

/// A descriptor's place in the reactor, from [`Reactor::register`] until
/// [`Reactor::deregister`] or the reactor's shutdown. It names the registration, not the fd
/// number: a registration that is gone is never confused with a new one that reuses its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Registration {
    pub(crate) token: Token,
}

impl Reactor {
    /// Registers `desc` with no interest yet: the registration lives until
    /// [`deregister`](Reactor::deregister), or until the reactor shuts down or is dropped, which
    /// call its [`connection_lost`](FileDescriptor::connection_lost) with
    /// [`Reason::ReactorShutdown`]. [`set_interest`](Reactor::set_interest) says what to watch.
    /// `trigger` is honoured where the backend can
    /// ([`Poller::edge_triggered`](crate::poller::Poller::edge_triggered)), else the
    /// registration is level-triggered.
    ///
    /// # Errors
    /// [`Error::Io`] with `EEXIST` when a live registration holds the same fd number, `EBADF`
    /// for a negative one.
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::{AsRawFd, RawFd};
    /// use std::os::unix::net::UnixStream;
    /// use std::rc::Rc;
    /// use torsion::poller::{Interest, Trigger};
    /// use torsion::{FileDescriptor, Reactor};
    ///
    /// struct Sock(UnixStream);
    /// impl FileDescriptor for Sock {
    ///     fn fileno(&self) -> RawFd { self.0.as_raw_fd() }
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let (a, _b) = UnixStream::pair()?;
    /// let reg = reactor.register(Rc::new(Sock(a)), Trigger::Level)?;
    /// reactor.set_interest(&reg, Interest::READ)?;
    /// assert_eq!(reactor.descriptor_count(), 1);
    /// reactor.deregister(&reg);
    /// assert_eq!(reactor.descriptor_count(), 0);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn register(
        &self,
        desc: Rc<dyn FileDescriptor>,
        trigger: Trigger,
    ) -> Result<Registration, Error> {
        let fd = self.fileno_of(&*desc)?;
        if self.claim_fd(fd, &desc)?.is_some() {
            // Registered already (a registration is one per descriptor).
            return Err(Error::Io(crate::sys::errno(crate::sys::EEXIST)));
        }
        let trigger = match trigger {
            Trigger::Edge if self.inner.poller.borrow().edge_triggered() => Trigger::Edge,
            _ => Trigger::Level,
        };
        let token = self.inner.registry.borrow_mut().insert(Entry {
            fd,
            desc,
            interest: Interest::default(),
            trigger,
            polled: false,
            facade: false,
            again: None,
        });
        Ok(Registration { token })
    }

    /// Sets what a registration waits for; empty interest keeps the registration but stops
    /// the poller watching it. Nothing happens when it is unchanged.
    ///
    /// # Errors
    /// [`Error::Io`] with `ENOENT` for a registration that is gone, or the poller's error.
    pub fn set_interest(&self, reg: &Registration, interest: Interest) -> Result<(), Error> {
        let gone = {
            let mut registry = self.inner.registry.borrow_mut();
            let Some(e) = registry.lookup_mut(reg.token) else {
                return Err(Error::Io(std::io::Error::from(
                    std::io::ErrorKind::NotFound,
                )));
            };
            if e.interest == interest {
                return Ok(());
            }
            let mut poller = self.inner.poller.borrow_mut();
            if interest.is_empty() {
                if e.polled {
                    let _ = poller.deregister(e.fd);
                    e.polled = false;
                }
                e.interest = interest;
                if !e.facade {
                    return Ok(());
                }
                drop(poller);
                registry.remove(reg.token)
            } else {
                if e.polled {
                    poller.reregister(e.fd, reg.token, interest, e.trigger)?;
                } else {
                    poller.register(e.fd, reg.token, interest, e.trigger)?;
                    e.polled = true;
                }
                e.interest = interest;
                return Ok(());
            }
        };
        drop(gone); // may drop user state: no borrow held
        Ok(())
    }

    /// The interest of a registration (`None` once it is gone).
    pub fn interest(&self, reg: &Registration) -> Option<Interest> {
        self.inner
            .registry
            .borrow()
            .lookup(reg.token)
            .map(|e| e.interest)
    }

    /// Ends a registration (deregistering it from the poller first, so that the descriptor can
    /// then be closed). Does nothing when it is already gone.
    pub fn deregister(&self, reg: &Registration) {
        let entry = self.remove_token(reg.token);
        drop(entry); // may drop user state: no borrow held
    }

    /// Watches `desc` for readability (Twisted's `addReader`).
    ///
    /// # Errors
    /// The poller's error, e.g. [`Error::FdOutOfRange`] on the select backend; `EEXIST` when
    /// another object's live registration holds the same fd number.
    #[doc(alias = "addReader")]
    pub fn add_reader(&self, desc: Rc<dyn FileDescriptor>) -> Result<(), Error> {
        self.add_interest(desc, Interest::READ)
    }

    /// Watches `desc` for writability (Twisted's `addWriter`).
    ///
    /// # Errors
    /// As [`add_reader`](Reactor::add_reader).
    #[doc(alias = "addWriter")]
    pub fn add_writer(&self, desc: Rc<dyn FileDescriptor>) -> Result<(), Error> {
        self.add_interest(desc, Interest::WRITE)
    }

    /// Stops watching `desc` for readability. Does nothing if it was not watched. The
    /// descriptor is found by identity, so this works even after its `fileno()` changed.
    #[doc(alias = "removeReader")]
    pub fn remove_reader(&self, desc: &dyn FileDescriptor) {
        self.remove_interest(desc, Interest::READ);
    }

    /// Stops watching `desc` for writability. As [`remove_reader`](Reactor::remove_reader).
    #[doc(alias = "removeWriter")]
    pub fn remove_writer(&self, desc: &dyn FileDescriptor) {
        self.remove_interest(desc, Interest::WRITE);
    }

    /// Stops watching every descriptor added with `add_reader`/`add_writer` and returns them
    /// (Twisted's `removeAll`). Registrations made with [`register`](Reactor::register) (the
    /// transports') stay: close them through their owners.
    #[doc(alias = "removeAll")]
    pub fn remove_all(&self) -> Vec<Rc<dyn FileDescriptor>> {
        let facade: Vec<Token> = self.tokens_where(|e| e.facade);
        facade
            .into_iter()
            .filter_map(|t| self.remove_token(t).map(|e| e.desc))
            .collect()
    }

    /// The descriptors watched for readability (Twisted's `getReaders`).
    #[doc(alias = "getReaders")]
    pub fn readers(&self) -> Vec<Rc<dyn FileDescriptor>> {
        self.descs_where(|e| e.interest.read)
    }

    /// The descriptors watched for writability (Twisted's `getWriters`).
    #[doc(alias = "getWriters")]
    pub fn writers(&self) -> Vec<Rc<dyn FileDescriptor>> {
        self.descs_where(|e| e.interest.write)
    }

    /// Number of registrations (the waker excluded), watched or not.
    pub fn descriptor_count(&self) -> usize {
        self.inner.registry.borrow().len()
    }

    fn tokens_where(&self, f: impl Fn(&Entry) -> bool) -> Vec<Token> {
        let registry = self.inner.registry.borrow();
        let tokens = registry.tokens();
        tokens
            .into_iter()
            .filter(|t| registry.lookup(*t).is_some_and(&f))
            .collect()
    }

    fn descs_where(&self, f: impl Fn(&Entry) -> bool) -> Vec<Rc<dyn FileDescriptor>> {
        let registry = self.inner.registry.borrow();
        let tokens = registry.tokens();
        tokens
            .into_iter()
            .filter_map(|t| registry.lookup(t).filter(|e| f(e)).map(|e| e.desc.clone()))
            .collect()
    }

    /// `desc.fileno()`, with a panic contained (it is user code) and -1 refused.
    fn fileno_of(&self, desc: &dyn FileDescriptor) -> Result<RawFd, Error> {
        let fd = self.guard_value("fileno", || desc.fileno()).unwrap_or(-1);
        if fd < 0 {
            return Err(Error::Io(crate::sys::errno(crate::sys::EBADF)));
        }
        Ok(fd)
    }

    /// Makes `fd` free for `desc`: fails when another object's live registration holds it;
    /// a stale one (its descriptor no longer reports that number: it was closed while
    /// registered and the number reused) is ended when its `fileno()` is -1 or panics, else
    /// forgotten (`add_reader`) or loses the number (`register`). Returns the token when
    /// `desc` itself holds it.
    fn claim_fd(&self, fd: RawFd, desc: &Rc<dyn FileDescriptor>) -> Result<Option<Token>, Error> {
        let held = {
            let registry = self.inner.registry.borrow();
            registry
                .by_fd(fd)
                .and_then(|t| registry.lookup(t).map(|e| (t, e.desc.clone())))
        };
        let Some((token, other)) = held else {
            return Ok(None);
        };
        if std::ptr::addr_eq(Rc::as_ptr(&other), Rc::as_ptr(desc)) {
            return Ok(Some(token));
        }
        let reason = match self.guard_value("fileno", || other.fileno()) {
            Some(current) if current == fd => {
                return Err(Error::Io(crate::sys::errno(crate::sys::EEXIST)));
            }
            // Its fileno() changed: handled below.
            Some(current) if current >= 0 => None,
            // Closed while registered (-1, Twisted's convention) and its number reused before
            // a poll reported it (epoll never does: a closed descriptor leaves it silently).
            Some(_) => Some(Reason::ConnectionLost(None)),
            None => Some(Reason::Panicked(Panicked("fileno() panicked".into()))),
        };
        if let Some(reason) = reason {
            // End it as dispatch would have: the registration goes now (the number is free
            // for `desc`), and, as every close, `connection_lost` runs on the next iteration
            // rather than inside this call.
            drop(self.remove_token(token));
            self.call_soon(move |r| other.connection_lost(r, reason));
            return Ok(None);
        }
        // It reports another number now. An `add_reader`/`add_writer` registration is forgotten,
        // as Twisted's reactors overwrite it (kept with no interest, nothing would ever remove
        // it). A transport's keeps its slot (its owner still ends it), but no longer this fd
        // number, which the poller forgets.
        let facade = {
            let registry = self.inner.registry.borrow();
            registry.lookup(token).is_some_and(|e| e.facade)
        };
        if facade {
            drop(self.remove_token(token)); // may drop user state: no borrow held
            return Ok(None);
        }
        let mut registry = self.inner.registry.borrow_mut();
        registry.unindex(token);
        if let Some(e) = registry.lookup_mut(token) {
            if e.polled {
                let _ = self.inner.poller.borrow_mut().deregister(fd);
                e.polled = false;
                e.interest = Interest::default();
            }
        }
        Ok(None)
    }

    fn add_interest(&self, desc: Rc<dyn FileDescriptor>, add: Interest) -> Result<(), Error> {
        let fd = self.fileno_of(&*desc)?;
        let token = match self.claim_fd(fd, &desc)? {
            Some(t) => t,
            None => self.inner.registry.borrow_mut().insert(Entry {
                fd,
                desc,
                interest: Interest::default(),
                trigger: Trigger::Level,
                polled: false,
                facade: true,
                again: None,
            }),
        };
        let reg = Registration { token };
        let old = self.interest(&reg).unwrap_or_default();
        let new = Interest {
            read: old.read || add.read,
            write: old.write || add.write,
        };
        let r = self.set_interest(&reg, new);
        if r.is_err() && old.is_empty() {
            self.deregister(&reg);
        }
        r
    }

    fn remove_interest(&self, desc: &dyn FileDescriptor, remove: Interest) {
        let ptr = desc as *const dyn FileDescriptor as *const u8;
        let fd = self.guard_value("fileno", || desc.fileno()).unwrap_or(-1);
        let token = {
            let registry = self.inner.registry.borrow();
            registry
                .by_fd(fd)
                .filter(|t| {
                    registry
                        .lookup(*t)
                        .is_some_and(|e| std::ptr::addr_eq(Rc::as_ptr(&e.desc), ptr))
                })
                .or_else(|| registry.by_identity(ptr))
        };
        let Some(token) = token else { return };
        let reg = Registration { token };
        let Some(old) = self.interest(&reg) else {
            return;
        };
        let new = Interest {
            read: old.read && !remove.read,
            write: old.write && !remove.write,
        };
        let _ = self.set_interest(&reg, new);
    }

    /// Removes a registration (poller first); the caller drops the entry with no borrow held.
    pub(super) fn remove_token(&self, token: Token) -> Option<Entry> {
        let entry = self.inner.registry.borrow_mut().remove(token)?;
        if entry.polled {
            let _ = self.inner.poller.borrow_mut().deregister(entry.fd);
        }
        Some(entry)
    }
}
