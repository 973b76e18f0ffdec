//! `echo-raw-uring --port N`: a single-threaded echo server written straight on io_uring, with
//! nothing between the loop and the ring: the practical ceiling of a completion-based server on
//! this kernel, as `echo-raw-epoll` is the ceiling of a readiness loop.
//!
//! * One ring, set up as torsion sets up its own (`SINGLE_ISSUER | DEFER_TASKRUN |
//!   COOP_TASKRUN`, a plain ring where the kernel refuses them). The loop makes one
//!   `io_uring_enter` per iteration, which submits everything queued and waits for a completion.
//! * The listener is one multishot ACCEPT; each connection is one multishot RECV into a
//!   provided-buffer ring (1,024 buffers of 16 KiB, torsion's default; `--bufs N --size BYTES`).
//! * The echo is never copied: the buffer a RECV filled is handed to a SEND as it is, and goes
//!   back to the buffer ring when the SEND completes. One SEND is in flight per connection;
//!   buffers received meanwhile wait in order behind it.
//! * A receive that found the buffer ring empty (`ENOBUFS`) is re-armed when a buffer comes back.
//! * A connection is closed once its receive has ended (end of stream or error) and no SEND is
//!   in flight, so no completion can arrive for a descriptor number after it is reused.
//! * `--fixed`: accepted connections go straight into the ring's registered file table (no
//!   descriptor is installed; RECV and SEND name the slot, which spares the kernel a file lookup
//!   and its reference count per operation), and are closed through the ring.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use bench::args::Args;
use bench::sys;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// `user_data`: the operation in bits 32 and up, the descriptor in the low 32 bits.
const ACCEPT: u64 = 1 << 32;
const RECV: u64 = 2 << 32;
const SEND: u64 = 3 << 32;
const CANCEL: u64 = 4 << 32;
const CLOSE: u64 = 5 << 32;
/// Slots of the registered file table with `--fixed`.
const FIXED_SLOTS: u32 = 65536;
const KIND: u64 = 0xffff_ffff << 32;
const GROUP: u16 = 0;

/// The provided-buffer ring: `count` buffers of `size` bytes, and the ring through which they are
/// handed to the kernel. Both mapped once and never freed (the process ends with the loop).
struct Buffers {
    ring: *mut types::BufRingEntry,
    bufs: *mut u8,
    count: u16,
    size: u32,
    tail: u16,
}

impl Buffers {
    fn new(count: u16, size: u32) -> io::Result<Buffers> {
        assert!(
            count.is_power_of_two() && size > 0,
            "--bufs must be a power of two"
        );
        let ring = map(usize::from(count) * std::mem::size_of::<types::BufRingEntry>())?;
        let bufs = map(usize::from(count) * size as usize)?;
        Ok(Buffers {
            ring: ring.cast(),
            bufs,
            count,
            size,
            tail: 0,
        })
    }

    /// The first `len` bytes of buffer `bid`, from `off` on.
    fn at(&self, bid: u16, off: u32) -> *const u8 {
        // SAFETY: `bid < count` (the kernel hands out only ids it was given) and `off < size`,
        // so the offset stays inside the mapping.
        unsafe {
            self.bufs
                .add(usize::from(bid) * self.size as usize + off as usize)
        }
    }

    /// Hands buffer `bid` back to the kernel.
    fn give_back(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the entry index is masked into the ring; the kernel reads only entries
        // between its head and the published tail, and this one is past the tail until the
        // release store below publishes it. The tail overlays the first entry's reserved field.
        unsafe {
            let entry = &mut *self.ring.add(usize::from(self.tail & mask));
            entry.set_addr(self.at(bid, 0) as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let at = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*at).store(self.tail, Ordering::Release);
        }
    }
}

/// Anonymous, page-aligned, zeroed memory of `len` bytes.
fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping references no file or existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
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

#[derive(Default)]
struct Conn {
    /// Received buffers not yet fully echoed: (buffer id, bytes sent, bytes received). The front
    /// one is in flight when `sending`.
    queue: VecDeque<(u16, u32, u32)>,
    sending: bool,
    /// The multishot RECV is armed (or a completion of it is still to come).
    receiving: bool,
    /// Waiting for a buffer to re-arm the receive (it ended with ENOBUFS).
    starved: bool,
    /// Reading ended: close once the echo is sent and nothing is in flight.
    done: bool,
    /// A SEND failed: what is queued is dropped, close once nothing is in flight.
    failed: bool,
}

struct Server {
    ring: IoUring,
    bufs: Buffers,
    conns: Vec<Conn>,
    /// Connections whose receive waits for a buffer.
    starved: Vec<RawFd>,
    listener: RawFd,
    /// Connections live in the registered file table (`--fixed`): `fd` names a slot.
    fixed: bool,
}

impl Server {
    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer a request names (the SEND's bytes inside the buffer ring)
            // stays mapped and untouched until its completion.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn arm_accept(&mut self) {
        // A registered file has no descriptor, so no close-on-exec flag to take.
        let flags = if self.fixed {
            libc::SOCK_NONBLOCK
        } else {
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        };
        let e = opcode::AcceptMulti::new(types::Fd(self.listener))
            .allocate_file_index(self.fixed)
            .flags(flags)
            .build()
            .user_data(ACCEPT | self.listener as u32 as u64);
        self.push(&e);
    }

    fn arm_recv(&mut self, fd: RawFd) {
        self.conns[fd as usize].receiving = true;
        let e = if self.fixed {
            opcode::RecvMulti::new(types::Fixed(fd as u32), GROUP).build()
        } else {
            opcode::RecvMulti::new(types::Fd(fd), GROUP).build()
        };
        let e = e.user_data(RECV | fd as u32 as u64);
        self.push(&e);
    }

    fn start_send(&mut self, fd: RawFd) {
        let c = &mut self.conns[fd as usize];
        let Some(&(bid, off, len)) = c.queue.front() else {
            return;
        };
        c.sending = true;
        let (at, len) = (self.bufs.at(bid, off), len - off);
        let e = if self.fixed {
            opcode::Send::new(types::Fixed(fd as u32), at, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Send::new(types::Fd(fd), at, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        };
        let e = e.user_data(SEND | fd as u32 as u64);
        self.push(&e);
    }

    fn give_back(&mut self, bid: u16) {
        self.bufs.give_back(bid);
        while let Some(fd) = self.starved.pop() {
            let c = &mut self.conns[fd as usize];
            if c.starved && !c.done {
                c.starved = false;
                self.arm_recv(fd);
                return;
            }
        }
    }

    /// Ends a connection whose SEND failed (none is in flight then): its queued echo is
    /// dropped (by `close_if_idle`) and its receive cancelled.
    fn fail(&mut self, fd: RawFd) {
        let c = &mut self.conns[fd as usize];
        c.done = true;
        c.failed = true;
        if c.receiving {
            let e = opcode::AsyncCancel::new(RECV | fd as u32 as u64)
                .build()
                .user_data(CANCEL | fd as u32 as u64);
            self.push(&e);
        }
        self.close_if_idle(fd);
    }

    fn close_if_idle(&mut self, fd: RawFd) {
        let c = &mut self.conns[fd as usize];
        if c.done && !c.sending && !c.receiving && (c.failed || c.queue.is_empty()) {
            let bids: Vec<u16> = c.queue.drain(..).map(|(bid, ..)| bid).collect();
            *c = Conn::default();
            for bid in bids {
                self.give_back(bid);
            }
            if self.fixed {
                let e = opcode::Close::new(types::Fixed(fd as u32))
                    .build()
                    .user_data(CLOSE | fd as u32 as u64);
                self.push(&e);
            } else {
                sys::close(fd);
            }
        }
    }

    fn on_completion(&mut self, user_data: u64, result: i32, flags: u32) {
        let fd = (user_data & 0xffff_ffff) as u32 as RawFd;
        match user_data & KIND {
            ACCEPT => {
                if result >= 0 {
                    let fd = result;
                    if self.conns.len() <= fd as usize {
                        self.conns.resize_with(fd as usize + 1, Conn::default);
                    }
                    self.conns[fd as usize] = Conn::default();
                    self.arm_recv(fd);
                } else if ![libc::ECONNABORTED, libc::EINTR, libc::EMFILE, libc::ENFILE]
                    .contains(&-result)
                {
                    eprintln!(
                        "echo-raw-uring: accept: {}",
                        io::Error::from_raw_os_error(-result)
                    );
                    std::process::exit(1);
                }
                if !cqueue::more(flags) {
                    self.arm_accept();
                }
            }
            RECV => {
                let more = cqueue::more(flags);
                self.conns[fd as usize].receiving = more;
                if result > 0 {
                    let bid = cqueue::buffer_select(flags).expect("a RECV without its buffer");
                    let c = &mut self.conns[fd as usize];
                    if c.done {
                        self.give_back(bid);
                    } else {
                        c.queue.push_back((bid, 0, result as u32));
                        if !c.sending {
                            self.start_send(fd);
                        }
                        if !more {
                            self.arm_recv(fd);
                        }
                    }
                } else if result == -libc::ENOBUFS && !self.conns[fd as usize].done {
                    self.conns[fd as usize].starved = true;
                    self.starved.push(fd);
                } else {
                    // End of stream, an error, or the cancellation of `fail`.
                    self.conns[fd as usize].done = true;
                    self.close_if_idle(fd);
                }
            }
            SEND => {
                let c = &mut self.conns[fd as usize];
                c.sending = false;
                if result < 0 {
                    self.fail(fd);
                    return;
                }
                let front = c.queue.front_mut().expect("a SEND without its buffer");
                front.1 += result as u32;
                if front.1 == front.2 {
                    let bid = front.0;
                    c.queue.pop_front();
                    self.give_back(bid);
                }
                if !self.conns[fd as usize].failed {
                    self.start_send(fd);
                }
                self.close_if_idle(fd);
            }
            // CANCEL: its target reports the outcome. CLOSE: the slot is free again.
            _ => {}
        }
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
    let count: u16 = args.get("bufs", 1024);
    let size: u32 = args.get("size", 16 * 1024);
    let fixed = args.get_str("fixed").is_some();
    sys::raise_nofile_limit();
    let listener = sys::listen_loopback(port, 4096).unwrap_or_else(|e| {
        eprintln!("echo-raw-uring: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(16384)
        .build(4096)
        .or_else(|_| IoUring::builder().setup_cqsize(16384).build(4096))
        .unwrap_or_else(|e| {
            eprintln!("echo-raw-uring: io_uring_setup: {e}");
            std::process::exit(1)
        });
    let mut bufs = Buffers::new(count, size).expect("mmap");
    // SAFETY: the ring memory is page-aligned, mapped for `count` entries and never unmapped.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, count, GROUP, 0)
            .expect("IORING_REGISTER_PBUF_RING");
    }
    for bid in 0..count {
        bufs.give_back(bid);
    }
    if fixed {
        // The table may not be larger than the descriptor limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let slots = (lim.rlim_cur as u32).clamp(64, FIXED_SLOTS);
        ring.submitter()
            .register_files_sparse(slots)
            .expect("IORING_REGISTER_FILES2 (sparse)");
    }
    let mut server = Server {
        ring,
        bufs,
        conns: Vec::new(),
        starved: Vec::new(),
        listener,
        fixed,
    };
    server.arm_accept();
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    loop {
        match server.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        done.extend(
            server
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for (user_data, result, flags) in done.drain(..) {
            server.on_completion(user_data, result, flags);
        }
    }
}
