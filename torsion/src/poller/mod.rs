//! Readiness backends behind one [`Poller`] contract: select(2), poll(2), epoll(7) and
//! io_uring(7).
//!
//! Registrations are level-triggered by default: a descriptor that stays readable is reported
//! again on every poll until it is drained or deregistered. A registration may ask for
//! [`Trigger::Edge`] instead (reported when new readiness arrives, and when the registration is
//! made or changed while the descriptor is ready); backends that cannot do that (select, poll)
//! report it level-triggered, which is a superset of the edge-triggered reports, and say so
//! with [`Poller::edge_triggered`]. Backends know descriptors and tokens, nothing about
//! transports. The reactor registers a descriptor only while it has a non-empty
//! [`Interest`], and deregisters it before it is closed.
//!
//! A backend is chosen at run time with [`Backend`], the equivalent of Twisted's
//! `pollreactor.install()`; the environment variable
//! `TORSION_REACTOR=select|poll|epoll|io_uring` changes the default for any program.
//!
//! io_uring may be unavailable (a kernel without it, a seccomp policy or
//! `kernel.io_uring_disabled` that refuses it, a locked-memory limit): asked for explicitly
//! ([`Backend::poller`], [`Reactor::with_backend`](crate::Reactor::with_backend)) it then fails
//! with [`BackendUnavailable`] ([`Error::BackendUnavailable`](crate::Error::BackendUnavailable));
//! as the default ([`Backend::default_poller`], used by [`Reactor::new`](crate::Reactor::new))
//! it falls back to epoll and says so in one log line.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::Duration;

mod epoll;
mod poll;
mod select;
pub(crate) mod uring;

/// An opaque value the reactor attaches to a registration and gets back with its events.
pub type Token = u64;

/// Which readiness a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Wait for readability (data, EOF or an error to read).
    pub read: bool,
    /// Wait for writability.
    pub write: bool,
}

impl Interest {
    /// Read interest only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Write interest only.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    /// Read and write interest.
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };

    /// True when neither read nor write is wanted.
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// How a registration reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trigger {
    /// Reported on every poll while the descriptor is ready (Twisted's semantics, and the
    /// default for user descriptors).
    #[default]
    Level,
    /// Reported when readiness arrives, and when the registration is made or changed while the
    /// descriptor is ready; not again until then. The owner must read until the system call
    /// would block or arrange to be called again. (A short read of a TCP socket drains it,
    /// except at an urgent mark: epoll then reports [`Event::priority`].)
    /// torsion's own transports use it on epoll: it spares the kernel a re-check of every
    /// descriptor reported by the previous wait.
    Edge,
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token given at registration.
    pub token: Token,
    /// The descriptor can be read (or has reached EOF).
    pub readable: bool,
    /// The descriptor can be written.
    pub writable: bool,
    /// The peer hung up or the descriptor is in error (POLLHUP, POLLERR, POLLNVAL; EPOLLHUP,
    /// EPOLLERR).
    pub hangup: bool,
    /// The peer shut its sending side down: the end of the stream is waiting to be read
    /// (POLLRDHUP, EPOLLRDHUP; select cannot tell). Reported with `readable`.
    pub read_closed: bool,
    /// Urgent (out-of-band) data is pending (EPOLLPRI, asked for by edge-triggered
    /// registrations only).
    pub priority: bool,
}

/// The contract every readiness backend implements.
///
/// # Implementation notes
/// * `poll` appends to `events` (the caller clears it) and returns `Ok` with no events when the
///   wait was interrupted by a signal: EINTR never reaches the caller.
/// * `register` fails with an [`io::ErrorKind::InvalidInput`] error carrying an
///   [`FdOutOfRange`] for descriptors the backend cannot watch (a reactor reports it as
///   [`Error::FdOutOfRange`](crate::Error::FdOutOfRange)).
/// * A timeout of `None` blocks until an event arrives; `Some(ZERO)` does not block.
/// * A backend that cannot do [`Trigger::Edge`] registers such descriptors level-triggered and
///   returns `false` from [`edge_triggered`](Poller::edge_triggered).
pub trait Poller {
    /// The backend's name (`"select"`, `"poll"`, `"epoll"` or `"io_uring"`).
    fn name(&self) -> &'static str;

    /// Whether [`Trigger::Edge`] registrations are edge-triggered on this backend.
    fn edge_triggered(&self) -> bool {
        false
    }

    /// Starts watching `fd` for `interest`, reporting events with `token`.
    ///
    /// # Errors
    /// The system error, or [`FdOutOfRange`] (as [`io::ErrorKind::InvalidInput`]).
    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()>;

    /// Changes the token or interest of a registered descriptor. An edge-triggered registration
    /// is reported at once if the descriptor is ready for the new interest.
    ///
    /// # Errors
    /// The system error.
    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()>;

    /// Stops watching `fd`. Call it before the descriptor is closed.
    ///
    /// # Errors
    /// The system error.
    fn deregister(&mut self, fd: RawFd) -> io::Result<()>;

    /// Waits up to `timeout` for readiness and appends the events to `events`.
    ///
    /// # Errors
    /// The system error (never EINTR).
    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
}

/// A descriptor a backend cannot watch: select(2) handles only descriptors below
/// `FD_SETSIZE`. A [`Poller`] returns it inside an [`io::Error`] of kind
/// [`InvalidInput`](io::ErrorKind::InvalidInput) (find it with [`io::Error::get_ref`] and
/// `downcast_ref`); converted to an [`Error`](crate::Error) it becomes [`Error::FdOutOfRange`](crate::Error::FdOutOfRange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdOutOfRange {
    /// The refused descriptor.
    pub fd: RawFd,
    /// The first descriptor number the backend cannot handle.
    pub limit: RawFd,
    /// The backend that refused it.
    pub backend: &'static str,
}

impl fmt::Display for FdOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FdOutOfRange { fd, limit, backend } = self;
        write!(
            f,
            "the {backend} backend cannot watch file descriptor {fd}: it handles only \
             descriptors below {limit}; use the poll or epoll backend"
        )
    }
}

impl std::error::Error for FdOutOfRange {}

impl From<FdOutOfRange> for io::Error {
    fn from(e: FdOutOfRange) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// The readiness backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// select(2): portable, limited to descriptors below `FD_SETSIZE` (1024).
    Select,
    /// poll(2): no descriptor limit, cost linear in the number of descriptors.
    Poll,
    /// epoll(7): cost linear in the number of ready descriptors (the Linux default).
    Epoll,
    /// io_uring(7) (Linux 5.11 or later). A reactor made with this backend runs TCP
    /// connections and listeners on completions (multishot accept, multishot receive into a
    /// provided-buffer ring, sends batched into the wait's own system call, Linux 5.19 or
    /// later), and every other descriptor on readiness through poll requests on the ring; the
    /// poller alone ([`Backend::poller`]) is readiness only. See the module docs for what
    /// happens where the kernel refuses it.
    IoUring,
}

impl Backend {
    /// Every backend, in the order select, poll, epoll, io_uring (io_uring may be unavailable
    /// at run time: see [`Backend::available`]).
    pub const ALL: [Backend; 4] = [
        Backend::Select,
        Backend::Poll,
        Backend::Epoll,
        Backend::IoUring,
    ];

    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Select => "select",
            Backend::Poll => "poll",
            Backend::Epoll => "epoll",
            Backend::IoUring => "io_uring",
        }
    }

    /// Whether a poller of this kind can be made here (io_uring is tried once per process).
    pub fn available(self) -> bool {
        match self {
            Backend::IoUring => {
                static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
                *AVAILABLE.get_or_init(|| uring::UringPoller::new(false).is_ok())
            }
            _ => true,
        }
    }

    /// The default backend: `TORSION_REACTOR` when it is set, else epoll.
    ///
    /// # Errors
    /// [`UnknownBackend`] when `TORSION_REACTOR` names no backend.
    pub fn from_env() -> Result<Backend, UnknownBackend> {
        match std::env::var("TORSION_REACTOR") {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(Backend::Epoll),
        }
    }

    /// Makes a poller of this kind.
    ///
    /// # Errors
    /// The system error when the kernel object cannot be created.
    pub fn poller(self) -> io::Result<Box<dyn Poller>> {
        Ok(match self {
            Backend::Select => Box::new(select::SelectPoller::new()),
            Backend::Poll => Box::new(poll::PollPoller::new()),
            Backend::Epoll => Box::new(epoll::EpollPoller::new()?),
            Backend::IoUring => Box::new(uring_poller()?),
        })
    }

    /// A poller of this kind for a reactor, with the io_uring completion port (multishot
    /// receives into a provided-buffer ring of `opts`, else the thread's test setting, else
    /// the defaults; batched sends) where the kernel offers it. A poller made by
    /// [`poller`](Backend::poller) has no port: given to
    /// [`Reactor::with_poller`](crate::Reactor::with_poller), an io_uring poller then drives
    /// every descriptor by readiness.
    pub(crate) fn reactor_poller(
        self,
        opts: Option<UringOptions>,
    ) -> io::Result<(Box<dyn Poller>, Option<uring::Port>)> {
        if self != Backend::IoUring {
            return Ok((self.poller()?, None));
        }
        let p = uring_poller()?;
        let (count, size) = match opts {
            Some(o) => (o.buffers, o.buffer_size),
            None => crate::sys::uring::buffer_ring_config()
                .unwrap_or((uring::DEFAULT_BUFFERS, uring::DEFAULT_BUFFER_SIZE)),
        };
        let port = match p.port(count, size) {
            Ok(port) => Some(port),
            Err(e) => {
                static LOGGED: std::sync::Once = std::sync::Once::new();
                LOGGED.call_once(|| {
                    tracing::warn!(error = %e, "io_uring buffer rings are unavailable: TCP connections use readiness on the io_uring backend");
                });
                None
            }
        };
        Ok((Box::new(p), port))
    }

    /// [`reactor_poller`](Backend::reactor_poller) as the default choice (see
    /// [`default_poller`](Backend::default_poller)).
    pub(crate) fn reactor_default_poller(
        self,
    ) -> io::Result<(Box<dyn Poller>, Backend, Option<uring::Port>)> {
        match self.reactor_poller(None) {
            Err(e) if is_unavailable(&e) => epoll_fallback(&e).map(|(p, b)| (p, b, None)),
            other => other.map(|(p, port)| (p, self, port)),
        }
    }

    /// Makes a poller of this kind as the default choice: where io_uring cannot be set up
    /// it falls back to epoll, logs one line (once per process) and returns the backend it
    /// used.
    ///
    /// # Errors
    /// The system error when the kernel object cannot be created.
    pub fn default_poller(self) -> io::Result<(Box<dyn Poller>, Backend)> {
        match self.poller() {
            Err(e) if is_unavailable(&e) => epoll_fallback(&e),
            other => other.map(|p| (p, self)),
        }
    }
}

/// The io_uring poller, or [`BackendUnavailable`] (in an `Unsupported` error) where the
/// kernel refuses it.
fn uring_poller() -> io::Result<uring::UringPoller> {
    uring::UringPoller::new(false).map_err(|cause| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            BackendUnavailable {
                backend: "io_uring",
                cause,
            },
        )
    })
}

/// The default choice when io_uring is unavailable (`e` says why): epoll, said once per
/// process.
fn epoll_fallback(e: &io::Error) -> io::Result<(Box<dyn Poller>, Backend)> {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        tracing::warn!(error = %e, "io_uring is unavailable: the reactor falls back to epoll");
    });
    Ok((Backend::Epoll.poller()?, Backend::Epoll))
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Backend, UnknownBackend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "select" => Ok(Backend::Select),
            "poll" => Ok(Backend::Poll),
            "epoll" => Ok(Backend::Epoll),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(Backend::IoUring),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

/// Settings of an io_uring reactor's TCP transport, for
/// [`Reactor::with_io_uring`](crate::Reactor::with_io_uring): the provided-buffer ring that
/// multishot receives fill.
///
/// Each received chunk takes one buffer until its `data_received` returns, so the ring bounds
/// how much a reactor receives between two waits; when it runs dry a receive is simply armed
/// again ([`Stats::buffer_ring_exhausted`](crate::reactor::Stats::buffer_ring_exhausted) counts it),
/// and nothing is lost. The memory (`buffers × buffer_size`) is mapped once per reactor and
/// touched as it is used.
///
/// # Examples
/// ```
/// use torsion::poller::UringOptions;
///
/// let small = UringOptions::new(256, 4096)?; // 1 MiB per reactor
/// assert_eq!((small.buffers(), small.buffer_size()), (256, 4096));
/// assert!(UringOptions::new(1000, 4096).is_err()); // not a power of two
/// assert_eq!(UringOptions::default().buffers(), 1024);
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringOptions {
    buffers: u16,
    buffer_size: u32,
}

impl Default for UringOptions {
    /// 1,024 buffers of 16 KiB (16 MiB of address space per reactor).
    fn default() -> Self {
        UringOptions {
            buffers: uring::DEFAULT_BUFFERS,
            buffer_size: uring::DEFAULT_BUFFER_SIZE,
        }
    }
}

impl UringOptions {
    /// `buffers` buffers (a power of two from 1 to 32,768) of `buffer_size` bytes (from 1 to
    /// 1 MiB), at most 1 GiB in all.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`](crate::Error::InvalidSetting) naming the value out of range.
    pub fn new(buffers: u32, buffer_size: u32) -> Result<UringOptions, crate::Error> {
        if !buffers.is_power_of_two() || buffers > 32768 {
            return Err(crate::Error::InvalidSetting(format!(
                "io_uring buffers: a power of two from 1 to 32768, not {buffers}"
            )));
        }
        if !(1..=1 << 20).contains(&buffer_size) {
            return Err(crate::Error::InvalidSetting(format!(
                "io_uring buffer size: from 1 to 1048576 bytes, not {buffer_size}"
            )));
        }
        if u64::from(buffers) * u64::from(buffer_size) > 1 << 30 {
            return Err(crate::Error::InvalidSetting(format!(
                "io_uring buffer ring: at most 1 GiB, not {buffers} x {buffer_size} bytes"
            )));
        }
        Ok(UringOptions {
            buffers: buffers as u16,
            buffer_size,
        })
    }

    /// Buffers in the ring.
    pub fn buffers(&self) -> u16 {
        self.buffers
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> u32 {
        self.buffer_size
    }
}

/// A backend name that names no backend (from `TORSION_REACTOR` or [`Backend::from_str`]);
/// it becomes [`Error::UnknownBackend`](crate::Error::UnknownBackend) with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown reactor backend {:?}: valid backends are select, poll, epoll and io_uring",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

/// A backend the kernel refuses (io_uring on an old kernel, under a seccomp policy that
/// forbids it, or at the locked-memory limit). A [`Poller`] constructor returns it inside an
/// [`io::Error`] of kind [`Unsupported`](io::ErrorKind::Unsupported); converted to an
/// [`Error`](crate::Error) it becomes
/// [`Error::BackendUnavailable`](crate::Error::BackendUnavailable).
#[derive(Debug)]
pub struct BackendUnavailable {
    /// The backend asked for.
    pub backend: &'static str,
    /// What the kernel said (ENOSYS, EPERM, ENOMEM, ...).
    pub cause: io::Error,
}

impl fmt::Display for BackendUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} backend cannot be set up here ({}); use epoll, or leave the backend to the \
             default choice, which falls back to epoll",
            self.backend, self.cause
        )
    }
}

impl std::error::Error for BackendUnavailable {}

fn is_unavailable(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|i| i.downcast_ref::<BackendUnavailable>().is_some())
}

/// What the kernel's io_uring offers, as [`io_uring_probe`] finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UringFeatures {
    /// Set-up features (`IORING_FEAT_*` without the prefix).
    pub features: Vec<&'static str>,
    /// Operations the kernel supports (`IORING_OP_*` without the prefix), of those torsion
    /// knows by name.
    pub supported: Vec<&'static str>,
    /// Operations it does not support, of the same list.
    pub unsupported: Vec<&'static str>,
}

/// Probes the kernel's io_uring: its features and which operations it supports.
///
/// # Errors
/// The system error when a ring cannot be set up.
///
/// # Examples
/// ```
/// match torsion::poller::io_uring_probe() {
///     Ok(f) => println!("io_uring features {:?}, ops {:?}", f.features, f.supported),
///     Err(e) => println!("no io_uring here: {e}"),
/// }
/// ```
pub fn io_uring_probe() -> io::Result<UringFeatures> {
    let p = crate::sys::uring_probe()?;
    Ok(UringFeatures {
        features: p.features,
        supported: p.supported,
        unsupported: p.unsupported,
    })
}

/// Makes io_uring set-up on this thread fail with `errno` (`None` restores it), as a kernel or
/// a seccomp policy that refuses io_uring would: for tests of the fallback and of the error.
#[cfg(any(test, feature = "testing"))]
pub fn simulate_io_uring_refusal(errno: Option<i32>) {
    crate::sys::simulate_uring_refusal(errno);
}

/// Makes io_uring reactors created later on this thread use a provided-buffer ring of
/// `count` buffers of `size` bytes each (`None` restores the defaults), so that a test can
/// run the ring dry (ENOBUFS) with little traffic.
///
/// # Panics
/// When `count` is not a power of two from 1 to 32768, or `size` is not from 1 to 1 MiB.
#[cfg(any(test, feature = "testing"))]
pub fn set_io_uring_buffer_ring(config: Option<(u16, u32)>) {
    if let Some((count, size)) = config {
        assert!(
            count.is_power_of_two() && count <= 32768,
            "the buffer count must be a power of two from 1 to 32768, not {count}"
        );
        assert!(
            (1..=1 << 20).contains(&size),
            "the buffer size must be from 1 byte to 1 MiB, not {size}"
        );
    }
    crate::sys::set_buffer_ring(config);
}

/// Makes the provided-buffer ring of io_uring reactors created later on this thread fail to
/// set up with `errno` (`None` restores it), as a kernel before 5.19 does: such a reactor runs
/// on io_uring with every socket, TCP included, driven by readiness.
#[cfg(any(test, feature = "testing"))]
pub fn simulate_io_uring_buffer_ring_refusal(errno: Option<i32>) {
    crate::sys::simulate_buffer_ring_refusal(errno);
}

/// Treats EINTR as "no events".
fn interrupted_ok(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn backend_names_parse_and_unknown_is_clear() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        let err = "kqueue".parse::<Backend>().unwrap_err().to_string();
        assert!(
            err.contains("kqueue") && err.contains("select, poll, epoll and io_uring"),
            "{err}"
        );
    }

    #[test]
    fn select_refuses_high_descriptors_with_an_io_error_that_converts_back() {
        let mut p = Backend::Select.poller().unwrap();
        let e = p
            .register(FD_LIMIT_PROBE, 1, Interest::READ, Trigger::Level)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<FdOutOfRange>());
        assert_eq!(
            inner.map(|r| (r.fd, r.backend)),
            Some((FD_LIMIT_PROBE, "select"))
        );
        let msg = e.to_string();
        assert!(
            matches!(
                Error::from(e),
                Error::FdOutOfRange {
                    fd: FD_LIMIT_PROBE,
                    ..
                }
            ),
            "{msg}"
        );
        // Any other io::Error is Error::Io, whose message carries the cause once.
        let io = Error::from(io::Error::from_raw_os_error(crate::sys::EEXIST));
        assert!(matches!(io, Error::Io(_)));
        assert!(std::error::Error::source(&io).is_none(), "{io}");
    }

    /// A descriptor number select(2) cannot watch (never opened: refused before any syscall).
    const FD_LIMIT_PROBE: RawFd = 5000;

    #[test]
    fn every_backend_reports_a_readable_pipe() {
        // Opens fds: keep other tests' fd counts exact.
        let _serial = crate::testing::serial();
        // io_uring only where the kernel offers it (tests/uring.rs covers the refusal).
        for b in Backend::ALL.into_iter().filter(|b| b.available()) {
            let mut p = b.poller().unwrap();
            let (r, w) = crate::sys::pipe().unwrap();
            use std::os::fd::AsRawFd;
            p.register(r.as_raw_fd(), 7, Interest::READ, Trigger::Level)
                .unwrap();
            let mut ev = Vec::new();
            p.poll(&mut ev, Some(Duration::ZERO)).unwrap();
            assert!(ev.is_empty(), "{b}: {ev:?}");
            crate::sys::write(w.as_raw_fd(), b"x").unwrap();
            p.poll(&mut ev, Some(Duration::from_secs(5))).unwrap();
            assert_eq!(ev.len(), 1, "{b}");
            assert!(ev[0].readable && ev[0].token == 7, "{b}: {ev:?}");
            // Level-triggered: reported again until drained.
            ev.clear();
            p.poll(&mut ev, Some(Duration::ZERO)).unwrap();
            assert_eq!(ev.len(), 1, "{b}");
            p.reregister(r.as_raw_fd(), 8, Interest::WRITE, Trigger::Level)
                .unwrap();
            ev.clear();
            p.poll(&mut ev, Some(Duration::ZERO)).unwrap();
            assert!(ev.is_empty(), "{b}: {ev:?}");
            p.deregister(r.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn edge_triggered_registrations_report_each_arrival_once() {
        let _serial = crate::testing::serial();
        use std::os::fd::AsRawFd;
        // io_uring only where the kernel offers it (tests/uring.rs covers the refusal).
        for b in Backend::ALL.into_iter().filter(|b| b.available()) {
            let mut p = b.poller().unwrap();
            let (r, w) = crate::sys::pipe().unwrap();
            let (r, w) = (r.as_raw_fd(), w.as_raw_fd());
            p.register(r, 7, Interest::READ, Trigger::Edge).unwrap();
            let mut ev = Vec::new();
            let mut poll = |p: &mut Box<dyn Poller>| {
                ev.clear();
                p.poll(&mut ev, Some(Duration::ZERO)).unwrap();
                ev.len()
            };
            crate::sys::write(w, b"x").unwrap();
            assert_eq!(poll(&mut p), 1, "{b}");
            // Not drained: level-triggered backends report it again, epoll does not...
            let again = if p.edge_triggered() { 0 } else { 1 };
            assert_eq!(poll(&mut p), again, "{b}");
            // ...until new data arrives, or the registration is changed while it is ready.
            crate::sys::write(w, b"y").unwrap();
            assert_eq!(poll(&mut p), 1, "{b}");
            assert_eq!(poll(&mut p), again, "{b}");
            p.reregister(r, 8, Interest::READ, Trigger::Edge).unwrap();
            assert_eq!(poll(&mut p), 1, "{b}");
            assert_eq!(p.edge_triggered(), b == Backend::Epoll, "{b}");
            p.deregister(r).unwrap();
        }
    }
}
