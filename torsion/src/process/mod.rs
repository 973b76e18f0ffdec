//! Child processes (Twisted's `spawnProcess`, `IProcessTransport` and `ProcessProtocol`).
//!
//! [`Reactor::spawn_process`] starts a program described by a [`Spawn`] (program, arguments,
//! environment, working directory, and a map of the child's descriptors) and drives a
//! [`ProcessProtocol`] with what happens to it: the bytes it writes on each pipe
//! ([`child_data_received`](ProcessProtocol::child_data_received)), each pipe closing
//! ([`child_connection_lost`](ProcessProtocol::child_connection_lost)), its exit
//! ([`process_exited`](ProcessProtocol::process_exited)), and, once it has exited *and* every
//! pipe has closed, [`process_ended`](ProcessProtocol::process_ended), as in Twisted.
//!
//! # The descriptor map
//! Each entry names a descriptor number in the child and what it is ([`ChildFd`]): a pipe the
//! parent reads ([`ChildFd::Read`], the child writes), a pipe the parent writes
//! ([`ChildFd::Write`]), or a descriptor of the parent that the child inherits under that
//! number ([`ChildFd::Inherit`]). The default map is Twisted's: 0 written by the parent, 1 and 2
//! read. Every other descriptor is closed in the child: numbers up to the map's highest are
//! closed explicitly, everything above is closed at exec (`close_range` with
//! `CLOSE_RANGE_CLOEXEC`).
//!
//! # Spawning
//! The child is forked and executes the program; a close-on-exec pipe reports a failure of
//! `chdir` or `execve` back to the parent, so [`spawn_process`](Reactor::spawn_process) returns
//! a typed [`SpawnError`] for a missing program, a permission problem or a bad working
//! directory, synchronously. It returns as soon as the program has been executed: it never
//! waits for the program to do anything. The program is looked up in `PATH` (the child's, when
//! the environment is replaced) before the fork. The child starts with an empty signal mask and
//! SIGPIPE's default action.
//!
//! # Reaping
//! Each child is watched through a pidfd (`pidfd_open`, Linux 5.3 and later), which becomes
//! readable when it ends; it is then reaped with `waitpid` for that pid only. No SIGCHLD
//! handler is involved and no other child of the program is touched. Where pidfds are missing
//! (ENOSYS), `spawn_process` fails with [`SpawnError::Io`] after killing and reaping the child:
//! there is no SIGCHLD fallback.
//!
//! # At reactor shutdown
//! A child still running when the reactor shuts down (or is dropped) is handled by its
//! [`OnShutdown`] policy: by default ([`OnShutdown::Terminate`]) it gets SIGTERM, then SIGKILL
//! if it has not ended within the grace period (default 5 s), and is reaped, so no zombie and
//! no orphan is left; its protocol sees the pipes close, then `process_exited` and
//! `process_ended`. With [`OnShutdown::Leave`] (Twisted's behaviour) it is left running and not
//! reaped: its pipes are closed (it sees end of file and EPIPE), and it becomes a zombie of
//! this process when it exits, until this process exits.
//!
//! # Flow control
//! Writes to the child's pipes go through the same write buffer as a TCP socket, with the
//! same water marks and producer registration ([`ProcessTransport::register_producer`]):
//! a child that does not read pauses a streaming producer instead of growing memory.
//!
//! # A plain protocol over a child
//! [`ProtocolProcess`] runs any [`Protocol`](crate::Protocol) over the child's stdin and stdout
//! (Twisted's `_ProcessEndpointTransport`), so a line protocol written for TCP talks to a child
//! unchanged.
//!
//! # Examples
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use torsion::process::{ExitStatus, ProcessContext, ProcessProtocol, Spawn};
//!
//! #[derive(Default)]
//! struct Collect { out: Vec<u8>, status: Option<ExitStatus> }
//! struct Cat(Rc<RefCell<Collect>>);
//! impl ProcessProtocol for Cat {
//!     fn connection_made(&mut self, cx: &mut ProcessContext<'_>) {
//!         cx.process().write(b"hello, child\n");
//!         cx.process().close_stdin();
//!     }
//!     fn child_data_received(&mut self, _: &mut ProcessContext<'_>, fd: i32, data: &[u8]) {
//!         if fd == 1 {
//!             self.0.borrow_mut().out.extend_from_slice(data);
//!         }
//!     }
//!     fn process_ended(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
//!         self.0.borrow_mut().status = Some(status);
//!         cx.reactor().stop().unwrap();
//!     }
//! }
//!
//! let reactor = torsion::Reactor::new()?;
//! let got = Rc::new(RefCell::new(Collect::default()));
//! reactor.spawn_process(Cat(got.clone()), &Spawn::new("cat"))?;
//! reactor.run()?;
//! assert_eq!(got.borrow().out, b"hello, child\n");
//! assert!(got.borrow().status.unwrap().success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod adapter;
mod transport;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::reactor::Signal;
pub use adapter::ProtocolProcess;
pub use transport::{ProcessContext, ProcessTransport};

use crate::{sys, Error, Reactor};

/// The highest descriptor number a child-fd map may name.
pub const MAX_CHILD_FD: RawFd = 1023;

/// What a descriptor of the child is (Twisted's `childFDs` values `"r"`, `"w"` and an int).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFd {
    /// A pipe the child writes and the parent reads: its bytes reach
    /// [`child_data_received`](ProcessProtocol::child_data_received).
    Read,
    /// A pipe the parent writes (with [`ProcessTransport::write_to_child`]) and the child
    /// reads.
    Write,
    /// This descriptor of the parent, given to the child under the map's number.
    Inherit(RawFd),
}

/// What happens to a child still running when its reactor shuts down or is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// SIGTERM, then SIGKILL after `grace` if it has not ended, then reap it (the shutdown
    /// waits that long at most). The default, with a 5 s grace.
    Terminate {
        /// How long to wait after SIGTERM before SIGKILL.
        grace: Duration,
    },
    /// Leave it running, unreaped (Twisted's behaviour): its pipes are closed.
    Leave,
}

impl Default for OnShutdown {
    fn default() -> Self {
        OnShutdown::Terminate {
            grace: Duration::from_secs(5),
        }
    }
}

/// How to start a child: Twisted's `spawnProcess` arguments, as a builder.
///
/// # Examples
/// ```
/// use torsion::process::{ChildFd, Spawn};
///
/// let spec = Spawn::new("sh")
///     .args(["-c", "echo $GREETING >&3"])
///     .env_clear()
///     .env("GREETING", "hi")
///     .env("PATH", "/usr/bin:/bin")
///     .cwd("/")
///     .child_fd(3, ChildFd::Read);
/// assert_eq!(spec.child_fds().len(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct Spawn {
    program: OsString,
    args: Vec<OsString>,
    arg0: Option<OsString>,
    env: Option<BTreeMap<OsString, OsString>>,
    env_set: BTreeMap<OsString, Option<OsString>>,
    cwd: Option<PathBuf>,
    fds: BTreeMap<RawFd, ChildFd>,
    on_shutdown: OnShutdown,
}

impl Spawn {
    /// Runs `program` (looked up in `PATH` unless it contains a `/`), with no arguments, this
    /// process's environment and working directory, and the default descriptor map.
    pub fn new(program: impl AsRef<OsStr>) -> Spawn {
        let mut fds = BTreeMap::new();
        fds.insert(0, ChildFd::Write);
        fds.insert(1, ChildFd::Read);
        fds.insert(2, ChildFd::Read);
        Spawn {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            arg0: None,
            env: None,
            env_set: BTreeMap::new(),
            cwd: None,
            fds,
            on_shutdown: OnShutdown::default(),
        }
    }

    /// Adds one argument (after `argv[0]`, which is the program unless [`arg0`](Self::arg0)).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Spawn {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `argv[0]` (Twisted's `args[0]`), by default the program as given.
    pub fn arg0(mut self, a: impl AsRef<OsStr>) -> Spawn {
        self.arg0 = Some(a.as_ref().to_owned());
        self
    }

    /// Starts from an empty environment instead of this process's.
    pub fn env_clear(mut self) -> Spawn {
        self.env = Some(BTreeMap::new());
        self.env_set.clear();
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Spawn {
        self.env_set
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes one environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Spawn {
        self.env_set.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Runs the child in `dir`.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Spawn {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Sets what descriptor `fd` of the child is (replacing the default for 0, 1 and 2).
    pub fn child_fd(mut self, fd: RawFd, what: ChildFd) -> Spawn {
        self.fds.insert(fd, what);
        self
    }

    /// Removes descriptor `fd` from the map: the child has it closed.
    pub fn no_child_fd(mut self, fd: RawFd) -> Spawn {
        self.fds.remove(&fd);
        self
    }

    /// The descriptor map.
    pub fn child_fds(&self) -> &BTreeMap<RawFd, ChildFd> {
        &self.fds
    }

    /// What happens to the child if it is still running at the reactor's shutdown.
    pub fn on_shutdown(mut self, policy: OnShutdown) -> Spawn {
        self.on_shutdown = policy;
        self
    }

    /// The resolved environment.
    fn environment(&self) -> BTreeMap<OsString, OsString> {
        let mut env = self
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars_os().collect());
        for (k, v) in &self.env_set {
            match v {
                Some(v) => env.insert(k.clone(), v.clone()),
                None => env.remove(k),
            };
        }
        env
    }
}

/// Why a child could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// No such program (not found in `PATH`, or the path does not exist).
    NotFound(OsString),
    /// The program is not executable by this process, or a directory on the way is not
    /// searchable.
    PermissionDenied(OsString),
    /// The working directory cannot be entered.
    BadDirectory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A descriptor map entry is out of range (0 to [`MAX_CHILD_FD`]) or inherits a descriptor
    /// that is not open.
    BadChildFd(RawFd),
    /// An argument, variable, program or directory contains a NUL byte.
    Nul,
    /// Executing the program failed for another reason (not an executable format, too many
    /// arguments...).
    Exec(io::Error),
    /// A system call of the parent failed (pipes, fork, pidfd).
    Io(io::Error),
    /// The reactor refused to watch the child's descriptors.
    Reactor(Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotFound(p) => write!(f, "no such program: {}", p.to_string_lossy()),
            SpawnError::PermissionDenied(p) => {
                write!(f, "permission denied executing {}", p.to_string_lossy())
            }
            SpawnError::BadDirectory { dir, error } => {
                write!(f, "cannot run in {}: {error}", dir.display())
            }
            SpawnError::BadChildFd(fd) => write!(
                f,
                "bad child descriptor {fd}: out of 0..={MAX_CHILD_FD} or not open in the parent"
            ),
            SpawnError::Nul => f.write_str("a NUL byte in a program, argument or variable"),
            SpawnError::Exec(e) => write!(f, "cannot execute the program: {e}"),
            SpawnError::Io(e) => write!(f, "spawning failed: {e}"),
            SpawnError::Reactor(e) => write!(f, "the reactor refused the child: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::BadDirectory { error, .. } => Some(error),
            SpawnError::Exec(e) | SpawnError::Io(e) => Some(e),
            SpawnError::Reactor(e) => Some(e),
            _ => None,
        }
    }
}

/// How a child ended (Twisted's `ProcessDone` / `ProcessTerminated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal.
        signal: Signal,
        /// It dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Exited with code 0 (Twisted's `ProcessDone`).
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<Signal> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            ExitStatus::Exited(_) => None,
        }
    }

    fn from_wait(w: sys::WaitStatus) -> ExitStatus {
        match w {
            sys::WaitStatus::Exited(c) => ExitStatus::Exited(c),
            sys::WaitStatus::Signaled {
                signal,
                core_dumped,
            } => ExitStatus::Signaled {
                signal: Signal::new(signal).unwrap_or(Signal::KILL),
                core_dumped,
            },
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {signal}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Errors of [`ProcessTransport::signal_process`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SignalError {
    /// The child has already exited (Twisted's `ProcessExitedAlready`).
    ProcessExitedAlready,
    /// The system refused (not permitted).
    Io(io::Error),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::ProcessExitedAlready => f.write_str("the process has already exited"),
            SignalError::Io(e) => write!(f, "cannot signal the process: {e}"),
        }
    }
}

impl std::error::Error for SignalError {}

/// What a child process does, as events (Twisted's `IProcessProtocol`). Every method has a
/// default that does nothing except [`child_data_received`](Self::child_data_received), which
/// hands fd 1 to [`out_received`](Self::out_received) and fd 2 to
/// [`err_received`](Self::err_received), as Twisted's `ProcessProtocol` does.
///
/// Callbacks are never nested: closing a pipe from inside a callback reports its
/// `child_connection_lost` later, on the loop.
pub trait ProcessProtocol {
    /// The child runs; `cx.process()` is its transport (clone it to keep it).
    fn connection_made(&mut self, cx: &mut ProcessContext<'_>) {
        let _ = cx;
    }

    /// The child wrote `data` on its descriptor `fd` (one the map made [`ChildFd::Read`]).
    fn child_data_received(&mut self, cx: &mut ProcessContext<'_>, fd: RawFd, data: &[u8]) {
        match fd {
            1 => self.out_received(cx, data),
            2 => self.err_received(cx, data),
            _ => {}
        }
    }

    /// The child wrote to its stdout (through the default `child_data_received`).
    fn out_received(&mut self, cx: &mut ProcessContext<'_>, data: &[u8]) {
        let _ = (cx, data);
    }

    /// The child wrote to its stderr (through the default `child_data_received`).
    fn err_received(&mut self, cx: &mut ProcessContext<'_>, data: &[u8]) {
        let _ = (cx, data);
    }

    /// The pipe of the child's descriptor `fd` closed (end of file, an error, or closed by
    /// this side).
    fn child_connection_lost(&mut self, cx: &mut ProcessContext<'_>, fd: RawFd) {
        let _ = (cx, fd);
    }

    /// The child exited (its pipes may still be open: a grandchild may hold them).
    fn process_exited(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
        let _ = (cx, status);
    }

    /// The child exited and every pipe closed: the last callback.
    fn process_ended(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
        let _ = (cx, status);
    }
}

impl Reactor {
    /// Starts a child process (Twisted's `reactor.spawnProcess`); see the [module
    /// docs](crate::process). `protocol.connection_made` runs before this returns.
    ///
    /// # Errors
    /// A [`SpawnError`]: the program is missing or not executable, the directory is bad, the
    /// map is invalid, or a system call failed. Nothing is left behind: no descriptor, no
    /// child.
    #[doc(alias = "spawnProcess")]
    pub fn spawn_process<P: ProcessProtocol + 'static>(
        &self,
        protocol: P,
        spec: &Spawn,
    ) -> Result<ProcessTransport, SpawnError> {
        transport::start(self, Box::new(protocol), spec)
    }
}

fn cstring(s: &OsStr) -> Result<CString, SpawnError> {
    CString::new(s.as_bytes()).map_err(|_| SpawnError::Nul)
}

/// The program's path: as given when it has a `/`, else the first executable match in the
/// `PATH` of the environment the child gets.
fn resolve(program: &OsStr, env: &BTreeMap<OsString, OsString>) -> Result<CString, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::NotFound(program.to_owned()));
    }
    if program.as_bytes().contains(&b'/') {
        return cstring(program);
    }
    let path = env
        .get(OsStr::new("PATH"))
        .cloned()
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = false;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(program.as_bytes());
        let c = CString::new(full).map_err(|_| SpawnError::Nul)?;
        let p = Path::new(OsStr::from_bytes(c.as_bytes()));
        if p.is_file() {
            if sys::is_executable(&c) {
                return Ok(c);
            }
            denied = true;
        }
    }
    if denied {
        Err(SpawnError::PermissionDenied(program.to_owned()))
    } else {
        Err(SpawnError::NotFound(program.to_owned()))
    }
}

/// A spec's resolved path, argv, envp and working directory.
type PlanParts = (CString, Vec<CString>, Vec<CString>, Option<CString>);

/// Turns a spec into what the child needs, minus the descriptors.
fn plan_parts(spec: &Spawn) -> Result<PlanParts, SpawnError> {
    let env = spec.environment();
    let path = resolve(&spec.program, &env)?;
    let mut argv = vec![cstring(spec.arg0.as_deref().unwrap_or(&spec.program))?];
    for a in &spec.args {
        argv.push(cstring(a)?);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in &env {
        if k.as_bytes().contains(&b'=') || k.is_empty() {
            continue;
        }
        let mut kv = k.clone().into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(CString::new(kv).map_err(|_| SpawnError::Nul)?);
    }
    let cwd = match &spec.cwd {
        Some(d) => Some(cstring(d.as_os_str())?),
        None => None,
    };
    Ok((path, argv, envp, cwd))
}

/// Pids of children spawned by torsion and not reaped yet.
static UNREAPED: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn unreaped() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u32>> {
    UNREAPED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for a child that torsion spawned and left unreaped (see [`OnShutdown::Leave`]), and
/// reaps it.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn reap_left(pid: u32) -> io::Result<ExitStatus> {
    if !unreaped().contains(&pid) {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let w = sys::wait_blocking(pid)?;
    unreaped().remove(&pid);
    Ok(ExitStatus::from_wait(w))
}

/// The children that torsion spawned and has not reaped (running, or zombies), sorted: what
/// the testing kit's leak check looks at, cross-checked with the kernel's list of this
/// process's children (`/proc/self/task/*/children`).
pub fn unreaped_children() -> Vec<u32> {
    let ours = unreaped();
    sys::child_pids()
        .into_iter()
        .filter(|p| ours.contains(p))
        .collect()
}
