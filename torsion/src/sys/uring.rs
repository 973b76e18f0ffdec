//! io_uring: the ring behind the `io_uring` backend, on the `io-uring` crate's bindings.
//!
//! Only readiness operations are queued here (POLL_ADD, POLL_REMOVE): they carry no buffer,
//! so nothing the kernel reads or writes can dangle. The one unsafe step is pushing an entry
//! onto the submission queue, which the crate marks unsafe because an entry may point at
//! memory; ours never do.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

/// poll(2) bits as the ring expects them (`poll32_events`).
pub(crate) const U_POLLIN: u32 = libc::POLLIN as u32;
pub(crate) const U_POLLPRI: u32 = libc::POLLPRI as u32;
pub(crate) const U_POLLOUT: u32 = libc::POLLOUT as u32;
pub(crate) const U_POLLERR: u32 = libc::POLLERR as u32;
pub(crate) const U_POLLHUP: u32 = libc::POLLHUP as u32;
pub(crate) const U_POLLNVAL: u32 = libc::POLLNVAL as u32;
pub(crate) const U_POLLRDHUP: u32 = libc::POLLRDHUP as u32;

thread_local! {
    /// An error number [`Ring::new`] returns instead of setting a ring up, on this thread
    /// (torsion's tests simulate a kernel or a seccomp policy that refuses io_uring).
    static REFUSE: Cell<Option<i32>> = const { Cell::new(None) };
}

thread_local! {
    /// The provided-buffer ring of rings made later on this thread: (buffers, bytes each);
    /// `None`: the defaults. torsion's tests use tiny rings to force ENOBUFS.
    static BUFFERS: Cell<Option<(u16, u32)>> = const { Cell::new(None) };
}

/// Sets the provided-buffer ring of io_uring reactors made later on this thread (`None`:
/// the defaults). `count` is a power of two from 1 to 32768, `size` from 1 to 1 MiB (checked
/// by the caller).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn set_buffer_ring(config: Option<(u16, u32)>) {
    BUFFERS.with(|b| b.set(config));
}

/// The provided-buffer ring configured for this thread, if any.
#[allow(dead_code)] // used by the completion transport
pub(crate) fn buffer_ring_config() -> Option<(u16, u32)> {
    BUFFERS.with(Cell::get)
}

/// Makes [`Ring::new`] fail with `errno` on this thread (`None` restores the real call).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn simulate_uring_refusal(errno: Option<i32>) {
    REFUSE.with(|r| r.set(errno));
}

/// One completion: the `user_data` of its request, its result and its flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    /// More completions follow for this request (a multishot poll is still armed).
    pub(crate) more: bool,
}

/// An io_uring instance used for readiness.
pub(crate) struct Ring {
    ring: IoUring,
}

impl Ring {
    /// Sets up a ring with `entries` submission slots and room for `cq_entries` completions.
    ///
    /// # Errors
    /// The system error (ENOSYS on a kernel without io_uring, EPERM when a seccomp policy or
    /// `kernel.io_uring_disabled` refuses it, ENOMEM at the locked-memory limit), or
    /// `Unsupported` when the kernel lacks what the backend relies on (`IORING_FEAT_EXT_ARG`
    /// for timed waits, `IORING_FEAT_NODROP` so that no completion is ever lost).
    pub(crate) fn new(entries: u32, cq_entries: u32) -> io::Result<Ring> {
        if let Some(code) = REFUSE.with(Cell::get) {
            return Err(io::Error::from_raw_os_error(code));
        }
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .build(entries)?;
        let p = ring.params();
        if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (Linux 5.11 or later is needed)",
            ));
        }
        Ok(Ring { ring })
    }

    /// Queues a poll for `events` on `fd` (one completion, or one per wake-up with `multi`).
    /// A full submission queue is submitted first.
    pub(crate) fn push_poll_add(
        &mut self,
        fd: RawFd,
        events: u32,
        multi: bool,
        user_data: u64,
    ) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), events)
            .multi(multi)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    /// Queues the removal of the poll request `target`; its completion carries `user_data`.
    pub(crate) fn push_poll_remove(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::PollRemove::new(target).build().user_data(user_data);
        self.push(&entry)
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the entries built here (POLL_ADD, POLL_REMOVE) reference no memory of
            // ours: the kernel reads a descriptor number, an event mask and a user_data value,
            // all copied into the queue slot by `push`.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // The queue is full: hand it to the kernel and try again.
            self.submit_now()?;
        }
    }

    /// Submits the queued entries without waiting. EINTR and EBUSY (completions backed up)
    /// are not errors: the entries not taken stay queued for the next call.
    pub(crate) fn submit_now(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits the queued entries and waits up to `timeout` (`None`: for ever) for at least one
    /// completion; `Some(ZERO)` does not wait. A timeout, a signal or backed-up completions end
    /// the wait without error.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            Some(t) if t.is_zero() => self.ring.submit(),
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t.min(Duration::from_secs(u32::MAX as u64)));
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes every completion waiting in the completion queue, in order.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Completion)) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            f(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                more: cqueue::more(cqe.flags()),
            });
        }
    }
}

/// Errors after which the ring is fine and the call may simply be made again.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

/// What the kernel's io_uring offers: set-up features and supported operations.
#[derive(Debug, Clone, Default)]
pub(crate) struct UringProbe {
    pub(crate) features: Vec<&'static str>,
    pub(crate) supported: Vec<&'static str>,
    pub(crate) unsupported: Vec<&'static str>,
}

/// Probes the kernel (a small ring, closed on return).
pub(crate) fn probe() -> io::Result<UringProbe> {
    let ring = Ring::new(8, 16)?.ring;
    let p = ring.params();
    let mut out = UringProbe::default();
    for (name, on) in [
        ("SINGLE_MMAP", p.is_feature_single_mmap()),
        ("NODROP", p.is_feature_nodrop()),
        ("SUBMIT_STABLE", p.is_feature_submit_stable()),
        ("RW_CUR_POS", p.is_feature_rw_cur_pos()),
        ("CUR_PERSONALITY", p.is_feature_cur_personality()),
        ("FAST_POLL", p.is_feature_fast_poll()),
        ("POLL_32BITS", p.is_feature_poll_32bits()),
        ("SQPOLL_NONFIXED", p.is_feature_sqpoll_nonfixed()),
        ("EXT_ARG", p.is_feature_ext_arg()),
        ("NATIVE_WORKERS", p.is_feature_native_workers()),
        ("RSRC_TAGS", p.is_feature_resource_tagging()),
        ("CQE_SKIP", p.is_feature_skip_cqe_on_success()),
        ("LINKED_FILE", p.is_feature_linked_file()),
        ("RECVSEND_BUNDLE", p.is_feature_recvsend_bundle()),
        ("MIN_TIMEOUT", p.is_feature_min_timeout()),
        ("NO_IOWAIT", p.is_feature_no_iowait()),
    ] {
        if on {
            out.features.push(name);
        }
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (name, code) in [
        ("POLL_ADD", opcode::PollAdd::CODE),
        ("POLL_REMOVE", opcode::PollRemove::CODE),
        ("TIMEOUT", opcode::Timeout::CODE),
        ("ACCEPT", opcode::Accept::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("CONNECT", opcode::Connect::CODE),
        ("SEND", opcode::Send::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SENDMSG", opcode::SendMsg::CODE),
        ("RECVMSG", opcode::RecvMsg::CODE),
        ("WRITEV", opcode::Writev::CODE),
        ("PROVIDE_BUFFERS", opcode::ProvideBuffers::CODE),
        ("SHUTDOWN", opcode::Shutdown::CODE),
        ("CLOSE", opcode::Close::CODE),
        ("MSG_RING", opcode::MsgRingData::CODE),
        ("SEND_ZC", opcode::SendZc::CODE),
        ("SENDMSG_ZC", opcode::SendMsgZc::CODE),
        ("READ_MULTISHOT", opcode::ReadMulti::CODE),
        ("WAITID", opcode::WaitId::CODE),
        ("FUTEX_WAIT", opcode::FutexWait::CODE),
        ("FIXED_FD_INSTALL", opcode::FixedFdInstall::CODE),
        ("FTRUNCATE", opcode::Ftruncate::CODE),
        ("BIND", opcode::Bind::CODE),
        ("LISTEN", opcode::Listen::CODE),
        ("RECV_ZC", opcode::RecvZc::CODE),
        ("EPOLL_WAIT", opcode::EpollWait::CODE),
        ("READV_FIXED", opcode::ReadvFixed::CODE),
        ("PIPE", opcode::Pipe::CODE),
    ] {
        if probe.is_supported(code) {
            out.supported.push(name);
        } else {
            out.unsupported.push(name);
        }
    }
    Ok(out)
}
