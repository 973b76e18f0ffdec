//! io_uring: the ring behind the `io_uring` backend, on the `io-uring` crate's bindings.
//!
//! Readiness operations (POLL_ADD, POLL_REMOVE) and cancellations carry no buffer. The socket
//! operations of the completion transport do, and this module owns every byte the kernel may
//! touch, so that nothing above it can make a buffer dangle:
//! * a SEND's bytes ([`SendOp`]) are moved into the ring when the request is queued and handed
//!   back only with its completion ([`Completion::send`]);
//! * received bytes land in the provided-buffer ring ([`BufPool`]): memory mapped here, handed
//!   out by a completion as a [`Taken`] buffer that goes back to the kernel when dropped;
//! * a dropped [`Ring`] cancels what is still in flight and waits for the completions before
//!   its memory (and the buffer pool's) is let go.

use std::cell::Cell;
use std::io;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use crate::tcp::buffer::Chunk;

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

thread_local! {
    /// An error number [`Ring::setup_buffers`] returns instead of registering a buffer ring,
    /// on this thread (a kernel before 5.19 refuses them with EINVAL).
    static REFUSE_BUFFERS: Cell<Option<i32>> = const { Cell::new(None) };
}

/// Makes [`Ring::setup_buffers`] fail with `errno` on this thread (`None` restores it).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn simulate_buffer_ring_refusal(errno: Option<i32>) {
    REFUSE_BUFFERS.with(|r| r.set(errno));
}

/// The provided-buffer ring configured for this thread, if any.
pub(crate) fn buffer_ring_config() -> Option<(u16, u32)> {
    BUFFERS.with(Cell::get)
}

/// Makes [`Ring::new`] fail with `errno` on this thread (`None` restores the real call).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn simulate_uring_refusal(errno: Option<i32>) {
    REFUSE.with(|r| r.set(errno));
}

/// One completion: the `user_data` of its request, its result and its flags.
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    /// More completions follow for this request (a multishot request is still armed).
    pub(crate) more: bool,
    /// The provided buffer a receive filled (its first `result` bytes).
    pub(crate) buffer: Option<Taken>,
    /// The bytes of a SEND, back from the kernel with its final completion.
    pub(crate) send: Option<SendOp>,
    /// The connection an ACCEPT completion created (closed if nobody takes it).
    pub(crate) accepted: Option<std::os::fd::OwnedFd>,
}

/// The bytes of one SEND: whole chunks of a write buffer, the first from `offset` on. Their
/// memory does not move while the request is in flight (the chunks' bytes live on the heap,
/// and the vectors describing several chunks are boxed). One chunk, the common case, costs no
/// allocation here.
pub(crate) struct SendOp {
    first: Chunk,
    rest: Vec<Chunk>,
    offset: usize,
    len: usize,
    /// For several chunks: the vectors and the message (SENDMSG) describing them.
    vectored: Option<(Box<[libc::iovec]>, Box<libc::msghdr>)>,
}

impl SendOp {
    /// The bytes to send: `first` from `offset` on, then `rest` (at most
    /// [`super::MAX_IOV`] chunks in all).
    pub(crate) fn new(first: Chunk, rest: Vec<Chunk>, offset: usize) -> SendOp {
        let len = first.len() - offset + rest.iter().map(|c| c.len()).sum::<usize>();
        let vectored = (!rest.is_empty()).then(|| {
            let iov: Box<[libc::iovec]> = std::iter::once(&first[offset..])
                .chain(rest.iter().map(|c| &c[..]))
                .map(|s| libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                })
                .collect();
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid value (no name,
            // no control data); the iovec fields are set below.
            let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            (iov, msg)
        });
        SendOp {
            first,
            rest,
            offset,
            len,
            vectored,
        }
    }

    /// Bytes it carries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The chunks and the offset into the first, back.
    pub(crate) fn into_parts(self) -> (Chunk, Vec<Chunk>, usize) {
        (self.first, self.rest, self.offset)
    }
}

/// An io_uring instance: readiness requests and socket operations.
///
/// Field order matters: the ring is dropped (after its `Drop` drained it) before the send
/// buffers and the buffer pool it may still have pointed at.
pub(crate) struct Ring {
    ring: IoUring,
    /// The bytes of SENDs in flight, by the low 32 bits of their `user_data`.
    sends: Vec<Option<SendOp>>,
    /// The provided-buffer ring, once set up.
    pool: Option<Rc<BufPool>>,
    /// Requests queued or in flight whose final completion has not been taken yet.
    in_flight: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Cancel everything, then wait (bounded) for the last completions: only then may the
        // bytes of SENDs and the buffer pool be freed.
        if self.in_flight == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(u64::MAX);
        // SAFETY: a cancellation references no memory of ours.
        if unsafe { self.ring.submission().push(&cancel) }.is_ok() {
            self.in_flight += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.in_flight > 0 && Instant::now() < deadline {
            let _ = self.submit_and_wait(Some(Duration::from_millis(50)));
            self.drain(drop);
        }
        if self.in_flight > 0 {
            // The kernel still holds requests: leak their memory rather than free it under
            // them.
            std::mem::forget(std::mem::take(&mut self.sends));
            if let Some(pool) = self.pool.take() {
                std::mem::forget(pool);
            }
        }
    }
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
        // Task work (the kernel's side of completions) runs only when this thread enters the
        // ring to wait (DEFER_TASKRUN, Linux 6.1), instead of interrupting it whenever a
        // socket changes; SINGLE_ISSUER says only this thread submits (a reactor is one
        // thread). Older kernels refuse the flags: a plain ring then.
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(cq_entries)
                    .setup_clamp()
                    .build(entries)
            })?;
        let p = ring.params();
        if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (Linux 5.11 or later is needed)",
            ));
        }
        Ok(Ring {
            ring,
            sends: Vec::new(),
            pool: None,
            in_flight: 0,
        })
    }

    /// Sets up the provided-buffer ring (group `BUFFER_GROUP`): `count` buffers (a power of
    /// two, at most 32768) of `size` bytes.
    ///
    /// # Errors
    /// The system error (memory, or a kernel without buffer rings).
    pub(crate) fn setup_buffers(&mut self, count: u16, size: u32) -> io::Result<Rc<BufPool>> {
        if let Some(code) = REFUSE_BUFFERS.with(Cell::get) {
            return Err(io::Error::from_raw_os_error(code));
        }
        let pool = Rc::new(BufPool::new(count, size)?);
        // SAFETY: the ring memory is page-aligned, mapped for `count` entries and lives in the
        // pool, which the ring holds until it has drained every request (`Drop`).
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                pool.ring as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..count {
            pool.give_back(bid);
        }
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// Queues a multishot receive on `fd` into the provided-buffer ring.
    pub(crate) fn push_recv_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let entry = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    /// Queues a multishot accept on the listening socket `fd` (new sockets non-blocking and
    /// close-on-exec).
    pub(crate) fn push_accept_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        debug_assert!(user_data & ACCEPT_TAG != 0);
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    /// Queues a SEND of `op`'s bytes on `fd` (SENDMSG for several chunks). The ring keeps the
    /// bytes until the completion hands them back. The low 32 bits of `user_data` must not
    /// name another SEND in flight.
    pub(crate) fn push_send(&mut self, fd: RawFd, op: SendOp, user_data: u64) -> io::Result<()> {
        debug_assert!(self_is_send(user_data));
        let slot = (user_data & 0xffff_ffff) as usize;
        if self.sends.len() <= slot {
            self.sends.resize_with(slot + 1, || None);
        }
        if self.sends[slot].is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a SEND with this slot is already in flight",
            ));
        }
        let entry = match &op.vectored {
            None => {
                let bytes = &op.first[op.offset..];
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Some((_, msg)) => opcode::SendMsg::new(types::Fd(fd), &**msg as *const libc::msghdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        }
        .user_data(user_data);
        // Held before the push: the entry points at these bytes from now on.
        self.sends[slot] = Some(op);
        if let Err(e) = self.push(&entry) {
            self.sends[slot] = None;
            return Err(e);
        }
        Ok(())
    }

    /// Queues the cancellation of the request `target` (all its completions end, the last
    /// with ECANCELED unless it finished first); its own completion carries `user_data`.
    pub(crate) fn push_cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(&entry)
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
            // SAFETY: the entries built here reference either no memory of ours (POLL_ADD,
            // POLL_REMOVE, ASYNC_CANCEL, ACCEPT without an address, a RECV that selects from
            // the buffer pool), or a SEND's bytes, which `push_send` stored in `self.sends`
            // before this push and which stay there until the request's final completion is
            // drained; `Drop` waits for those completions before anything is freed.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            // The queue is full: hand it to the kernel and try again.
            self.submit_now()?;
        }
    }

    /// Submits the queued entries without waiting, and runs the kernel's deferred task work
    /// (a cancelled request lets its file go only then). EINTR and EBUSY (completions backed
    /// up) are not errors: the entries not taken stay queued for the next call.
    pub(crate) fn submit_now(&mut self) -> io::Result<()> {
        match self.enter_no_wait() {
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
            Some(t) if t.is_zero() => self.enter_no_wait(),
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

    /// Submits what is queued and takes completions without waiting: GETEVENTS even so, since
    /// deferred task work runs only then.
    fn enter_no_wait(&mut self) -> io::Result<usize> {
        let len = self.ring.submission().len();
        // SAFETY: no argument is passed; the entries being submitted are those the `push`
        // contract keeps valid.
        unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                len as u32,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        }
    }

    /// Takes every completion waiting in the completion queue, in order.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Completion)) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let (user_data, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            if !more {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            let buffer = match (cqueue::buffer_select(flags), &self.pool) {
                (Some(bid), Some(pool)) => {
                    let len = usize::try_from(result).unwrap_or(0);
                    super::counters::add_read(len);
                    Some(pool.take(bid, len))
                }
                _ => None,
            };
            let send = if more {
                None
            } else {
                let slot = (user_data & 0xffff_ffff) as usize;
                // Only a SEND's final completion finds its own bytes here (other requests'
                // slots are never filled with their user_data).
                let op = self.sends.get_mut(slot).and_then(|s| {
                    if s.is_some() && self_is_send(user_data) {
                        s.take()
                    } else {
                        None
                    }
                });
                if op.is_some() && result > 0 {
                    super::counters::add_written(result as usize);
                }
                op
            };
            let accepted = if user_data & ACCEPT_TAG != 0 && user_data != u64::MAX {
                adopt_accepted(result)
            } else {
                None
            };
            f(Completion {
                user_data,
                result,
                more,
                buffer,
                send,
                accepted,
            });
        }
    }
}

/// Takes ownership of the descriptor a multishot ACCEPT completion created (counted as an
/// accepted connection).
fn adopt_accepted(fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return None;
    }
    super::counters::add_accepted();
    // SAFETY: the kernel created this descriptor for the completion being handled and handed
    // it to nobody else; this is its only owner.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The buffer group of the provided-buffer ring.
const BUFFER_GROUP: u16 = 0;

/// Marks the `user_data` of socket operations (bit 63); readiness requests never have it.
pub(crate) const OP_TAG: u64 = 1 << 63;

/// Marks the `user_data` of SENDs (bit 62, with [`OP_TAG`]), so that `drain` gives a SEND's
/// bytes back to its own completion only.
pub(crate) const SEND_TAG: u64 = 1 << 62;

/// Marks the `user_data` of ACCEPTs (bit 61, with [`OP_TAG`]): `drain` takes ownership of the
/// descriptors they create, so that none leaks whoever handles (or drops) the completion.
pub(crate) const ACCEPT_TAG: u64 = 1 << 61;

fn self_is_send(user_data: u64) -> bool {
    user_data & (OP_TAG | SEND_TAG) == OP_TAG | SEND_TAG && user_data != u64::MAX
}

/// The provided-buffer ring: `count` buffers of `size` bytes the kernel fills with received
/// bytes, and the ring of descriptors through which they are handed to it. Both mapped here.
pub(crate) struct BufPool {
    /// The ring of `count` entries, shared with the kernel.
    ring: *mut types::BufRingEntry,
    ring_len: usize,
    bufs: *mut u8,
    bufs_len: usize,
    count: u16,
    size: u32,
    /// Our copy of the ring's tail (the kernel reads the one in the ring).
    tail: Cell<u16>,
}

impl BufPool {
    fn new(count: u16, size: u32) -> io::Result<BufPool> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a buffer ring needs a power-of-two count up to 32768 and a non-zero size",
            ));
        }
        let ring_len = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        let bufs_len = usize::from(count) * size as usize;
        let ring = map(ring_len)?;
        let bufs = match map(bufs_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped just above with this length and is not used.
                unsafe { libc::munmap(ring.cast(), ring_len) };
                return Err(e);
            }
        };
        Ok(BufPool {
            ring: ring.cast(),
            ring_len,
            bufs,
            bufs_len,
            count,
            size,
            tail: Cell::new(0),
        })
    }

    /// The buffer `bid`, whose first `len` bytes a completion filled: ours until dropped.
    fn take(self: &Rc<Self>, bid: u16, len: usize) -> Taken {
        let bid = bid % self.count;
        Taken {
            pool: self.clone(),
            bid,
            len: len.min(self.size as usize),
        }
    }

    /// Hands buffer `bid` back to the kernel.
    fn give_back(&self, bid: u16) {
        let mask = self.count - 1;
        let tail = self.tail.get();
        // SAFETY: the slot index is masked into the ring's `count` entries; the kernel reads
        // only entries between its head and the published tail, and this one is past the tail
        // until the store below publishes it.
        unsafe {
            let entry = &mut *self.ring.add(usize::from(tail & mask));
            entry.set_addr(self.bufs.add(usize::from(bid) * self.size as usize) as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail field overlays the first entry's reserved field; the kernel reads
        // it with acquire semantics, so a release store publishes the entry written above.
        unsafe {
            let at = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*at).store(tail, Ordering::Release);
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped by `new` with these lengths; the ring that used
        // them has drained its requests (or leaked the pool instead of dropping it).
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
            libc::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}

/// Anonymous, private, page-aligned memory of `len` bytes (zeroed, touched lazily).
fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping references no file or existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// A provided buffer a receive filled, out of the kernel's reach until dropped (then it goes
/// back to the ring).
pub(crate) struct Taken {
    pool: Rc<BufPool>,
    bid: u16,
    len: usize,
}

impl Deref for Taken {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: buffer `bid` lies inside the pool's mapping (bid < count); the kernel wrote
        // its first `len` bytes (at most `size`) before posting the completion, and does not
        // write it again until `give_back` returns it to the ring, which happens only when
        // this `Taken` drops.
        unsafe {
            std::slice::from_raw_parts(
                self.pool
                    .bufs
                    .add(usize::from(self.bid) * self.pool.size as usize),
                self.len,
            )
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.pool.give_back(self.bid);
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
    let owner = Ring::new(8, 16)?;
    let ring = &owner.ring;
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
