//! `echo-raw-epoll --port N`: a single-threaded echo server written straight on the epoll
//! syscalls, as fast as it can be made: the practical ceiling the other servers are held to.
//!
//! * Each connection is registered once, edge-triggered, for reading and writing
//!   (`EPOLLIN | EPOLLOUT | EPOLLET`), so that no `epoll_ctl(MOD)` is ever needed.
//! * One shared read buffer (256 KiB; `--buf BYTES` to change it). A read shorter than the buffer means the socket was
//!   drained, so the "read until EAGAIN" call of edge-triggered loops is skipped.
//! * What `write` does not take is kept per connection, and reading stops until the next
//!   writable edge drains it (back-pressure without a re-registration).
//! * Per-connection state is an empty `Vec` (24 bytes, no heap) indexed by descriptor.
//! * A new connection is read at once after `accept` (the client usually sent already), and a
//!   closing descriptor is not deregistered first: `close` removes it from the epoll set.

use std::io;
use std::os::fd::RawFd;

use bench::args::Args;
use bench::sys::{self, Epoll, EPOLLET, EPOLLIN, EPOLLOUT};

const LISTENER: u64 = u64::MAX;
/// 256 KiB: measured ~1.4x more streaming throughput per CPU-second than 64 KiB on loopback
/// (fewer syscalls per byte); ping-pong does not care.
const DEFAULT_READ_BUF: usize = 256 * 1024;

struct Server {
    ep: Epoll,
    /// Bytes still to write, per descriptor (empty when the connection is not blocked).
    pending: Vec<Vec<u8>>,
    buf: Box<[u8]>,
}

impl Server {
    fn buf_len(&self) -> usize {
        self.buf.len()
    }
}

impl Server {
    fn accept_all(&mut self, listener: RawFd) {
        loop {
            match sys::accept(listener) {
                Ok(fd) => {
                    let i = fd as usize;
                    if self.pending.len() <= i {
                        self.pending.resize_with(i + 1, Vec::new);
                    }
                    if !self.on_readable(fd) {
                        continue;
                    }
                    if let Err(e) = self.ep.add(fd, EPOLLIN | EPOLLOUT | EPOLLET, fd as u64) {
                        eprintln!("epoll_ctl(ADD): {e}");
                        self.close(fd);
                    }
                }
                Err(e) if sys::would_block(&e) => return,
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    eprintln!("accept: {e}");
                    return;
                }
                Err(_) => return, // ECONNABORTED and the like: the next event retries
            }
        }
    }

    fn close(&mut self, fd: RawFd) {
        self.pending[fd as usize] = Vec::new();
        sys::close(fd);
    }

    /// Echoes everything readable. Returns false when the connection was closed.
    fn on_readable(&mut self, fd: RawFd) -> bool {
        loop {
            match sys::read(fd, &mut self.buf) {
                Ok(0) => {
                    self.close(fd);
                    return false;
                }
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        match sys::write(fd, &self.buf[off..n]) {
                            Ok(w) => off += w,
                            Err(e) if sys::would_block(&e) => {
                                self.pending[fd as usize].extend_from_slice(&self.buf[off..n]);
                                return true; // wait for the writable edge
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                self.close(fd);
                                return false;
                            }
                        }
                    }
                    if n < self.buf_len() {
                        return true; // drained: the next arrival makes a new edge
                    }
                }
                Err(e) if sys::would_block(&e) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(fd);
                    return false;
                }
            }
        }
    }

    /// Flushes what is pending. Returns true when nothing is left (reading may resume).
    fn flush(&mut self, fd: RawFd) -> Result<bool, ()> {
        let pending = &mut self.pending[fd as usize];
        let mut off = 0;
        while off < pending.len() {
            match sys::write(fd, &pending[off..]) {
                Ok(w) => off += w,
                Err(e) if sys::would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        pending.drain(..off);
        if pending.is_empty() {
            // Give back a large buffer left by a streaming burst.
            if pending.capacity() > 1 << 20 {
                *pending = Vec::new();
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn on_event(&mut self, fd: RawFd) {
        if !self.pending[fd as usize].is_empty() {
            match self.flush(fd) {
                Ok(true) => {}
                Ok(false) => return,
                Err(()) => return self.close(fd),
            }
        }
        self.on_readable(fd);
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
    let buf_len: usize = args.get("buf", DEFAULT_READ_BUF);
    sys::raise_nofile_limit();
    let listener = sys::listen_loopback(port, 4096).unwrap_or_else(|e| {
        eprintln!("echo-raw-epoll: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let mut server = Server {
        ep: Epoll::new().expect("epoll_create1"),
        pending: Vec::new(),
        buf: vec![0u8; buf_len.max(1)].into_boxed_slice(),
    };
    server
        .ep
        .add(listener, EPOLLIN, LISTENER)
        .expect("epoll_ctl(listener)");
    let mut events = sys::event_buffer(1024);
    loop {
        let n = server.ep.wait(&mut events, -1).expect("epoll_wait");
        for ev in &events[..n] {
            let data = ev.u64;
            if data == LISTENER {
                server.accept_all(listener);
            } else {
                server.on_event(data as RawFd);
            }
        }
    }
}
