//! Process-global knobs and facts for torsion's own tests: thread CPU time, signals (a target
//! thread, `pthread_kill`, a do-nothing handler), RLIMIT_NOFILE, SIGPIPE's disposition, and
//! pipes. They change or read the state of the whole process, so they are not product API.

use std::io;
use std::time::Duration;

use super::cvt;

/// CPU time (user + system) used by the calling thread.
pub(crate) fn thread_cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is plain data; zeroed is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live rusage the kernel fills in.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) })?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// A thread that signals can be sent to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadId(libc::pthread_t);

/// The calling thread.
pub(crate) fn current_thread() -> ThreadId {
    // SAFETY: pthread_self has no preconditions.
    ThreadId(unsafe { libc::pthread_self() })
}

/// Sends `sig` to `thread`. Only called by `testing::signal_storm`, whose target thread is
/// blocked inside the same `thread::scope` and so cannot have exited.
pub(crate) fn signal_thread(thread: ThreadId, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: `thread` is alive (see above), so its pthread_t is valid for pthread_kill.
    let r = unsafe { libc::pthread_kill(thread.0, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Sends `sig` to the process `pid` (kill(2)).
pub(crate) fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "process id out of range"))?;
    // SAFETY: kill only takes plain integers; a wrong pid is an error, not undefined behaviour.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs a handler that does nothing for `sig`, *without* SA_RESTART, so that blocking
/// system calls in the process see EINTR when the signal arrives.
pub(crate) fn install_noop_handler(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed means no flags and an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as usize;
    // SAFETY: `sa.sa_mask` is a live sigset_t.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: `sa` is a valid sigaction whose handler is async-signal-safe (it does nothing).
    cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    Ok(())
}

/// Lowers or raises this process's RLIMIT_NOFILE soft limit (for the testing kit).
pub(crate) fn set_nofile_limit(soft: u64) -> io::Result<()> {
    // SAFETY: rlimit is plain data.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a live rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    r.rlim_cur = soft.min(r.rlim_max);
    // SAFETY: `r` is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(())
}

/// Restores SIGPIPE's default action (kill the process), as some host programs do.
pub(crate) fn default_sigpipe() -> io::Result<()> {
    // SAFETY: setting a standard disposition for a standard signal.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
#[cfg(test)]
pub(crate) fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    Ok((super::owned(fds[0]), super::owned(fds[1])))
}

/// `write(2)` from `buf`.
#[cfg(test)]
pub(crate) fn write(fd: std::os::fd::RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }).map(|n| n as usize)
}
