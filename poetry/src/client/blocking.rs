//! The blocking client: one poem after the other, each read to the end before the next starts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::timedelta::format_timedelta;

use super::{failed_line, show, Download, Fetched, GetOptions, Model};
use crate::progress::Progress;
use crate::Address;

/// Reads the whole poem from `address`: `recv` until the server closes, within the
/// [`Limits`](super::Limits).
fn get_poetry(
    address: &Address,
    opts: &GetOptions,
    mut on_bytes: impl FnMut(usize),
) -> io::Result<Vec<u8>> {
    let mut sock = connect(address, opts.timeout)?;
    let limits = opts.limits;
    sock.set_read_timeout(Some(limits.idle_timeout.max(Duration::from_millis(1))))?;
    let mut poem = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        // The blocking call of this program: it waits as long as the server takes.
        match sock.read(&mut buf) {
            Ok(0) => return Ok(poem),
            Ok(n) => {
                if poem.len() + n > limits.max_poem {
                    return Err(super::limits::too_large(limits.max_poem));
                }
                poem.extend_from_slice(&buf[..n]);
                on_bytes(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data for {:?}", limits.idle_timeout),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A blocking connection to the first of `address`'s addresses that accepts.
pub(super) fn connect(address: &Address, timeout: Duration) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in (address.host.as_str(), address.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub(super) fn run(
    tasks: &[Address],
    opts: &GetOptions,
    progress: Progress,
    out: &mut dyn Write,
) -> io::Result<Fetched> {
    let mut downloads = Vec::with_capacity(tasks.len());
    let mut total = Duration::ZERO;
    for (i, address) in tasks.iter().enumerate() {
        let task = i + 1;
        writeln!(out, "Task {task}: get poetry from: {address}")?;
        out.flush()?;
        let start = Instant::now();
        let poem = get_poetry(address, opts, |n| progress.add(i, n));
        let elapsed = start.elapsed();
        total += elapsed;
        progress.finish(i, poem.is_ok());
        match &poem {
            Ok(poem) => {
                writeln!(
                    out,
                    "Task {task}: got {} bytes of poetry from {address} in {}",
                    poem.len(),
                    format_timedelta(elapsed)
                )?;
                if opts.show {
                    show(out, poem)?;
                }
            }
            Err(e) => eprintln!("{}", failed_line(task, address, &e.to_string())),
        }
        downloads.push(Download {
            task,
            address: address.clone(),
            poem: poem.map_err(|e| e.to_string()),
            elapsed,
        });
    }
    progress.clear();
    let fetched = Fetched {
        model: Model::Blocking,
        downloads,
        elapsed: total,
    };
    writeln!(
        out,
        "Got {} poems in {}",
        fetched.poems(),
        format_timedelta(total)
    )?;
    out.flush()?;
    Ok(fetched)
}
