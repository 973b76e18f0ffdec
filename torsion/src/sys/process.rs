//! System calls for child processes and standard I/O: pipes, fork/exec with a descriptor map
//! and an error pipe, pidfds, waitpid, signals to a child, and descriptor flags.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{cvt, owned};

/// A pipe, both ends close-on-exec: `(read end, write end)`.
pub(crate) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// The file status flags of `fd` (F_GETFL).
#[allow(dead_code)]
pub(crate) fn get_status_flags(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL only reads the open file's flags; a bad fd is EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Sets the file status flags of `fd` (F_SETFL).
pub(crate) fn set_status_flags(fd: RawFd, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL with an int argument; a bad fd is EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Turns O_NONBLOCK on or off on `fd`; returns the flags it had before.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<i32> {
    let old = get_status_flags(fd)?;
    let new = if on {
        old | libc::O_NONBLOCK
    } else {
        old & !libc::O_NONBLOCK
    };
    if new != old {
        set_status_flags(fd, new)?;
    }
    Ok(old)
}

/// True when `fd` is a regular file (or a block device): what epoll refuses with EPERM.
pub(crate) fn is_regular_file(fd: RawFd) -> io::Result<bool> {
    // SAFETY: stat is plain data; zeroed is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live stat buffer; a bad fd is EBADF.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    let kind = st.st_mode & libc::S_IFMT;
    Ok(kind == libc::S_IFREG || kind == libc::S_IFBLK)
}

/// `read(2)` into `buf`.
pub(crate) fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    let n = cvt(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// `write(2)` of `buf`.
pub(crate) fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, readable buffer of `buf.len()` bytes.
    let n = cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// `writev(2)` of up to [`MAX_IOV`](super::MAX_IOV) buffers.
pub(crate) fn writev_fd(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let n = bufs.len().min(super::MAX_IOV);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; super::MAX_IOV];
    for (v, b) in iov.iter_mut().zip(bufs) {
        v.iov_base = b.as_ptr() as *mut libc::c_void;
        v.iov_len = b.len();
    }
    // SAFETY: the first `n` iovecs point into live slices borrowed for this call.
    let r = cvt(unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) })?;
    Ok(r as usize)
}

/// How a child ended, as waitpid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled { signal: i32, core_dumped: bool },
}

/// Reaps `pid` if it has ended (`waitpid(WNOHANG)`): `None` while it runs.
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<WaitStatus>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live int; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        match cvt(r) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(decode(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reaps `pid`, waiting for it (used only for a child that is known to be ending at once).
pub(crate) fn wait_blocking(pid: u32) -> io::Result<WaitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live int.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        match cvt(r) {
            Ok(_) => return Ok(decode(status)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn decode(status: libc::c_int) -> WaitStatus {
    if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    }
}

/// A pidfd for `pid` (Linux 5.3): readable once the process has ended. Close-on-exec.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with an int pid and no flags; the result is checked.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    Ok(owned(r as libc::c_int))
}

/// Sends `sig` to the process a pidfd names (never to a process that reused its pid).
pub(crate) fn pidfd_send_signal(pidfd: RawFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall; the siginfo pointer may be null; the result is checked.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Sends `sig` to the process `pid`.
pub(crate) fn kill_pid(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with int arguments.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// The step of a spawn that failed in the child, reported through the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStage {
    /// Setting up descriptors.
    Fds,
    /// Changing to the working directory.
    Chdir,
    /// Executing the program.
    Exec,
}

/// Everything a child needs, prepared in the parent (no allocation after fork).
pub(crate) struct SpawnPlan {
    /// The resolved program path.
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) cwd: Option<CString>,
    /// `(source in the parent, number in the child)`.
    pub(crate) fds: Vec<(RawFd, RawFd)>,
}

/// Forks and executes `plan`. Returns the pid once the child has executed the program (the
/// close-on-exec error pipe reads end of file), or the stage and error that failed (the child
/// is then reaped before this returns).
pub(crate) fn spawn(plan: &SpawnPlan) -> Result<u32, (SpawnStage, io::Error)> {
    let fds_err = |e| (SpawnStage::Fds, e);
    let max_target = plan.fds.iter().map(|&(_, t)| t).max().unwrap_or(2).max(2);
    let floor = max_target + 1;
    // Every source is copied above every target first, so no dup2 in the child can overwrite
    // a source still to be copied. The copies are close-on-exec and closed below.
    let mut high: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(plan.fds.len());
    for &(src, target) in &plan.fds {
        // SAFETY: F_DUPFD_CLOEXEC duplicates `src` to the lowest free number >= `floor`.
        let d = cvt(unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor) }).map_err(fds_err)?;
        high.push((owned(d), target));
    }
    let (err_r, err_w0) = pipe_cloexec().map_err(fds_err)?;
    // SAFETY: as above, for the error pipe's write end, which must survive the child's closes.
    let err_w = owned(
        cvt(unsafe { libc::fcntl(err_w0.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) })
            .map_err(fds_err)?,
    );
    drop(err_w0);
    let dups: Vec<(RawFd, RawFd)> = high.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    let mut closes: Vec<RawFd> = (0..=max_target)
        .filter(|n| !plan.fds.iter().any(|&(_, t)| t == *n))
        .collect();
    closes.shrink_to_fit();
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = plan.cwd.as_ref().map(|c| c.as_ptr());
    let path = plan.path.as_ptr();
    let err_fd = err_w.as_raw_fd();

    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe calls on memory prepared before the fork, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fds_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child of a fork, only async-signal-safe system calls (sigprocmask,
        // signal, dup2, close, syscall, chdir, execve, write, _exit) on memory that was made
        // before the fork and is not freed by this process until it execs or exits.
        unsafe { child_after_fork(&dups, &closes, floor, err_fd, cwd, path, &argv, &envp) }
    }
    drop(err_w);
    drop(high);
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match read_fd(err_r.as_raw_fd(), &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got < report.len() {
        // End of file: the program was executed.
        return Ok(pid as u32);
    }
    let stage = match i32::from_ne_bytes(report[..4].try_into().expect("4 bytes")) {
        0 => SpawnStage::Fds,
        1 => SpawnStage::Chdir,
        _ => SpawnStage::Exec,
    };
    let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
    let _ = wait_blocking(pid as u32);
    Err((stage, io::Error::from_raw_os_error(errno)))
}

/// The child's side of [`spawn`]. Never returns.
///
/// # Safety
/// Only to be called in the child of a fork; every pointer must be valid and NUL-terminated
/// as execve wants.
#[allow(clippy::too_many_arguments)]
unsafe fn child_after_fork(
    dups: &[(RawFd, RawFd)],
    closes: &[RawFd],
    floor: RawFd,
    err_fd: RawFd,
    cwd: Option<*const libc::c_char>,
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |stage: i32| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(err_fd, msg.as_ptr().cast(), 8);
        libc::_exit(127)
    };
    // The reactor's signal handling may block signals or ignore SIGPIPE: the program starts
    // with an empty mask and SIGPIPE's default action, as a shell would give it.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    for &(src, target) in dups {
        // dup2 clears close-on-exec on the new descriptor.
        if libc::dup2(src, target) < 0 {
            fail(0);
        }
    }
    for &n in closes {
        libc::close(n);
    }
    // Everything above the map is closed at exec (the copies, the error pipe, and any
    // descriptor of the parent opened without close-on-exec). Older kernels lack close_range:
    // torsion's own descriptors are close-on-exec anyway.
    libc::syscall(
        libc::SYS_close_range,
        floor as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    );
    if let Some(dir) = cwd {
        if libc::chdir(dir) < 0 {
            fail(1);
        }
    }
    libc::execve(path, argv.as_ptr(), envp.as_ptr());
    fail(2)
}

/// True when `path` names a file this process may execute.
pub(crate) fn is_executable(path: &CString) -> bool {
    // SAFETY: `path` is a live NUL-terminated string.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// The pids of this process's children that have not been reaped (running or zombies), from
/// `/proc/self/task/*/children`.
pub(crate) fn child_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                pids.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
