//! Listening Unix sockets: the stale-socket-file policy, the file's mode, accepting.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{Unix, UnixListenOptions};
use crate::interfaces::{Address, ListeningPort, ListeningPortImpl, ProtocolFactory, UnixAddress};
use crate::poller::{Interest, Trigger};
use crate::protocol::{factory_port_closed, factory_port_opened};
use crate::reactor::{Inner, Registration};
use crate::tcp::shed::Shedder;
use crate::tcp::{FdLimits, Limits, Setup, StreamConnection};
use crate::{sys, DelayedCall, Error, FileDescriptor, Reactor, Reason};

/// Connections accepted per readiness event at most, so that a flood of connects cannot starve
/// the other descriptors.
const ACCEPT_BUDGET: usize = 64;

/// How long the listener stops accepting when accepts keep failing (out of descriptors and no
/// spare one to shed waiting clients with).
const FAILING_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct UnixListener {
    me: Weak<UnixListener>,
    fd: RawFd,
    sock: RefCell<Option<OwnedFd>>,
    reactor: Weak<Inner>,
    factory: Rc<dyn ProtocolFactory>,
    addr: UnixAddress,
    /// The socket file this port created (device, inode), removed when it stops.
    file: Option<(u64, u64)>,
    /// The lock file held (`UnixListenOptions::lock`), removed when the port stops.
    lock: Option<Lock>,
    limits: Rc<Limits>,
    fd_limits: FdLimits,
    paused: RefCell<Option<DelayedCall>>,
    reg: Cell<Option<Registration>>,
    accepted: Cell<u64>,
    /// What it does when the process is out of descriptors.
    shedder: Shedder,
}

impl ListeningPortImpl for UnixListener {
    fn address(&self) -> Address {
        Address::Unix(self.addr.clone())
    }

    fn stop_listening(&self) {
        if self.sock.borrow().is_none() {
            return;
        }
        if let Some(r) = self.reactor() {
            if let Some(reg) = self.reg.take() {
                r.deregister(&reg);
            }
            if let Some(p) = self.paused.borrow_mut().take() {
                let _ = p.cancel();
            }
        }
        drop(self.sock.borrow_mut().take());
        if let (UnixAddress::Path(p), Some(id)) = (&self.addr, self.file) {
            remove_if_ours(p, id);
        }
        if let Some(lock) = &self.lock {
            lock.release();
        }
        self.shedder.release();
        factory_port_closed(&self.factory);
    }

    fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    fn shed(&self) -> u64 {
        self.shedder.shed()
    }
}

/// Removes the socket file at `path` if it is still the one this port created (a server that
/// replaced it keeps its own).
fn remove_if_ours(path: &Path, id: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() && (m.dev(), m.ino()) == id => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket file");
            }
        }
        _ => {
            tracing::debug!(path = %path.display(), "the socket file is gone or replaced; left alone")
        }
    }
}

impl UnixListener {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn accept_one(&self, r: &Reactor, sock: OwnedFd, peer: UnixAddress) {
        self.accepted.set(self.accepted.get() + 1);
        let peer = Address::Unix(peer);
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.build_protocol(&peer)
        }));
        match built {
            Ok(Some(protocol)) => {
                let setup = Setup {
                    protocol,
                    limits: self.limits.clone(),
                    on_lost: None,
                };
                let host = Some(Address::Unix(self.addr.clone()));
                StreamConnection::<Unix>::start(r, sock, peer, host, setup, self.fd_limits, |_| {});
            }
            Ok(None) => drop(sock), // refused by the factory
            Err(payload) => {
                let msg = crate::error::panic_message(&*payload);
                tracing::error!(%peer, message = %msg, "build_protocol panicked; connection closed");
                drop(sock);
            }
        }
    }

    /// Starts or stops accepting.
    fn watch(&self, r: &Reactor, on: bool) {
        let Some(reg) = self.reg.get() else { return };
        let interest = if on {
            Interest::READ
        } else {
            Interest::default()
        };
        if let Err(e) = r.set_interest(&reg, interest) {
            tracing::warn!(addr = %Address::Unix(self.addr.clone()), error = %e, "cannot change whether a listener accepts");
        }
    }

    /// Stops accepting for a while, so that a listener whose accepts keep failing does not
    /// spin on its level-triggered readiness.
    fn pause(&self, r: &Reactor) {
        if self.paused.borrow().is_some() {
            return;
        }
        self.watch(r, false);
        let me = self.me.clone();
        let call = r.call_later(FAILING_PAUSE, move |r| {
            if let Some(l) = me.upgrade() {
                l.paused.borrow_mut().take();
                if l.sock.borrow().is_some() {
                    l.shedder.restore();
                    l.watch(r, true);
                }
            }
        });
        *self.paused.borrow_mut() = Some(call);
    }
}

impl FileDescriptor for UnixListener {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, r: &Reactor) -> Result<(), Reason> {
        for _ in 0..ACCEPT_BUDGET {
            if self.sock.borrow().is_none() {
                break;
            }
            match sys::unix_accept(self.fd) {
                Ok((sock, peer)) => self.accept_one(r, sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    let addr = Address::Unix(self.addr.clone());
                    let accept = || sys::unix_accept(self.fd).map(|(c, _)| c);
                    if !self.shedder.shed_pending(&addr, ACCEPT_BUDGET, accept) {
                        tracing::warn!(%addr, "out of file descriptors: pausing accepts");
                        self.pause(r);
                    }
                    break;
                }
                Err(e) if sys::is_transient_accept_error(&e) => continue,
                Err(e) => {
                    let addr = Address::Unix(self.addr.clone());
                    tracing::error!(%addr, error = %e, "accept failed; pausing accepts");
                    self.pause(r);
                    break;
                }
            }
        }
        Ok(())
    }

    fn connection_lost(&self, _r: &Reactor, reason: Reason) {
        let addr = Address::Unix(self.addr.clone());
        tracing::debug!(%addr, %reason, "listening port closed by the reactor");
        self.stop_listening();
    }
}

/// Applies the stale-socket-file policy to `path` before binding: nothing there, or a dead
/// socket (removed), is fine; a live server or a file that is not a socket is refused.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: not replaced",
                path.display()
            ),
        ));
    }
    let probe = sys::unix_socket()?;
    let addr = UnixAddress::Path(path.to_path_buf());
    match sys::unix_connect(probe.as_raw_fd(), &addr) {
        // Connected, in progress, or the accept queue is full: a server is there.
        Ok(_) => Err(live(path)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(live(path)),
        Err(e) if sys::is_refused(&e) => {
            tracing::info!(path = %path.display(), "replacing a dead socket file");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()), // removed meanwhile
        Err(e) => Err(e),
    }
}

/// A lock file (Twisted's `FilesystemLock`): a symbolic link whose target is the holder's
/// process id, made atomically by `symlink(2)`.
pub(crate) struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path`, taking over one whose holder is dead.
    fn acquire(path: PathBuf) -> io::Result<Lock> {
        let me = std::process::id().to_string();
        for _ in 0..2 {
            match std::os::unix::fs::symlink(&me, &path) {
                Ok(()) => return Ok(Lock { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let holder = std::fs::read_link(&path)
                .ok()
                .and_then(|t| t.to_str().and_then(|t| t.parse::<u32>().ok()));
            match holder {
                Some(pid) if sys::process_exists(pid) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is held by process {pid}", path.display()),
                    ));
                }
                _ => {
                    // A dead holder's (or unreadable) lock: taken over.
                    tracing::info!(path = %path.display(), ?holder, "taking over a stale lock file");
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: another process took the lock meanwhile",
                path.display()
            ),
        ))
    }

    /// Removes the lock file if it is still ours.
    fn release(&self) {
        let ours = std::fs::read_link(&self.path)
            .is_ok_and(|t| t.to_str() == Some(std::process::id().to_string().as_str()));
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn live(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("a server is listening on {}", path.display()),
    )
}

pub(crate) fn listen(
    r: &Reactor,
    addr: UnixAddress,
    factory: Rc<dyn ProtocolFactory>,
    opts: UnixListenOptions,
) -> Result<ListeningPort, Error> {
    opts.check()?;
    // Checked before anything touches the file system.
    sys::sockaddr_un(&addr).map_err(|e| Error::BadAddress(e.to_string()))?;
    let lock = match (&addr, opts.lock) {
        (UnixAddress::Path(p), true) => {
            let mut lock_path = p.clone().into_os_string();
            lock_path.push(".lock");
            Some(Lock::acquire(PathBuf::from(lock_path))?)
        }
        (_, true) => {
            return Err(Error::BadAddress(
                "a lock file needs a path, not an abstract name".into(),
            ))
        }
        _ => None,
    };
    let (sock, file) = match bind(&addr, &opts) {
        Ok(bound) => bound,
        Err(e) => {
            if let Some(l) = &lock {
                l.release();
            }
            return Err(e);
        }
    };
    let fd = sock.as_raw_fd();
    let listener = Rc::new_cyclic(|me| UnixListener {
        me: me.clone(),
        fd,
        sock: RefCell::new(Some(sock)),
        reactor: Rc::downgrade(&r.inner),
        factory,
        addr: addr.clone(),
        file,
        lock,
        limits: opts.limits(),
        fd_limits: opts.fd_limits(),
        paused: RefCell::new(None),
        reg: Cell::new(None),
        accepted: Cell::new(0),
        shedder: Shedder::new(),
    });
    let registered = r
        .register(listener.clone(), Trigger::Level)
        .and_then(|reg| {
            listener.reg.set(Some(reg));
            r.set_interest(&reg, Interest::READ)
        });
    if let Err(e) = registered {
        if let Some(reg) = listener.reg.take() {
            r.deregister(&reg);
        }
        drop(listener.sock.borrow_mut().take());
        if let (UnixAddress::Path(p), Some(id)) = (&addr, file) {
            remove_if_ours(p, id);
        }
        if let Some(l) = &listener.lock {
            l.release();
        }
        return Err(e);
    }
    factory_port_opened(&listener.factory);
    Ok(ListeningPort::new(listener))
}

/// Applies the socket file policy, binds, sets the mode and listens: the socket, and the
/// (device, inode) of the file it made. Nothing is left behind on failure.
fn bind(
    addr: &UnixAddress,
    opts: &UnixListenOptions,
) -> Result<(OwnedFd, Option<(u64, u64)>), Error> {
    if let UnixAddress::Path(p) = addr {
        clear_stale(p)?;
    }
    let sock = sys::unix_socket()?;
    let fd = sock.as_raw_fd();
    sys::unix_bind(fd, addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            Error::Io(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: {e}", Address::Unix(addr.clone())),
            ))
        } else {
            Error::Io(e)
        }
    })?;
    let UnixAddress::Path(p) = addr else {
        sys::listen(fd, opts.backlog)?;
        return Ok((sock, None));
    };
    // From here on, the file is ours: removed again if anything below fails.
    let mut file = None;
    let setup = (|| {
        let meta = std::fs::symlink_metadata(p)?;
        file = Some((meta.dev(), meta.ino()));
        if let Some(mode) = opts.mode {
            // Before listen(2): nobody can connect with the umask's permissions meanwhile.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
        }
        sys::listen(fd, opts.backlog)
    })();
    if let Err(e) = setup {
        if let Some(id) = file {
            remove_if_ours(p, id);
        }
        return Err(Error::Io(e));
    }
    Ok((sock, file))
}
