//! The article's asynchronous "Get Poetry Now!" client (its select() loop), rebuilt on the
//! reactor with `add_reader`: the loop is torsion's, the per-socket code is a `FileDescriptor`.
//!
//! ```text
//! cargo run --example select_client -- 10001 10002 localhost:10003
//! TORSION_REACTOR=poll cargo run --example select_client -- 10001
//! ```

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use torsion::{FileDescriptor, Reactor, Reason};

/// One download: a non-blocking socket read to EOF.
struct PoetrySocket {
    sock: RefCell<Option<TcpStream>>,
    fd: RawFd,
    poem: RefCell<Vec<u8>>,
    /// Downloads still running; the last one to finish stops the reactor.
    remaining: Rc<Cell<usize>>,
}

impl FileDescriptor for PoetrySocket {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
        let mut sock = self.sock.borrow_mut();
        let sock = sock.as_mut().ok_or(Reason::ConnectionDone)?;
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Err(Reason::ConnectionDone),
                Ok(n) => self.poem.borrow_mut().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Reason::lost(e)),
            }
        }
    }

    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        if !reason.is_clean() {
            eprintln!("Poem failed: {reason}");
        }
        // Deregistered already: now the socket may close.
        self.sock.borrow_mut().take();
        self.remaining.set(self.remaining.get() - 1);
        if self.remaining.get() == 0 {
            let _ = reactor.stop();
        }
    }
}

fn parse_address(arg: &str) -> Result<(String, u16), String> {
    let (host, port) = match arg.split_once(':') {
        Some((h, p)) => (if h.is_empty() { "127.0.0.1" } else { h }, p),
        None => ("127.0.0.1", arg),
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("Ports must be integers.".into());
    }
    let port = port
        .parse()
        .map_err(|_| "Ports must be integers.".to_string())?;
    Ok((host.to_string(), port))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("select_client: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: select_client [hostname:]port ...");
        std::process::exit(2);
    }
    let addresses = match args
        .iter()
        .map(|a| parse_address(a))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("select_client: error: {msg}");
            std::process::exit(2);
        }
    };

    let reactor = Reactor::new()?;
    eprintln!("Running on the {} reactor.", reactor.poller_name());
    let start = Instant::now();
    let remaining = Rc::new(Cell::new(addresses.len()));
    let mut downloads = Vec::new();
    for (host, port) in &addresses {
        // Blocking connect, then non-blocking reads, as the original.
        let sock = TcpStream::connect((host.as_str(), *port))?;
        sock.set_nonblocking(true)?;
        let d = Rc::new(PoetrySocket {
            fd: sock.as_raw_fd(),
            sock: RefCell::new(Some(sock)),
            poem: RefCell::default(),
            remaining: remaining.clone(),
        });
        reactor.add_reader(d.clone())?;
        downloads.push(d);
    }
    reactor.run()?;
    let elapsed = start.elapsed();
    for (i, d) in downloads.iter().enumerate() {
        println!("Task {}: {} bytes of poetry", i + 1, d.poem.borrow().len());
    }
    println!(
        "Got {} poems in {}",
        addresses.len(),
        format_elapsed(elapsed)
    );
    Ok(())
}

/// `elapsed` as `H:MM:SS.ffffff`, the way the tutorial's Python client prints a `timedelta`
/// (no fraction when it is zero; this example's runs never last a day).
fn format_elapsed(elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match elapsed.subsec_micros() {
        0 => format!("{h}:{m:02}:{s:02}"),
        micros => format!("{h}:{m:02}:{s:02}.{micros:06}"),
    }
}
