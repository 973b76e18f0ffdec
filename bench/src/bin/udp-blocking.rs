//! `udp-blocking --port N [--mode echo|sink] [--rcvbuf BYTES]`: the baseline of the datagram benchmark (see
//! `udp-bench`): a plain blocking loop of `recv_from`/`send_to` on one `std::net::UdpSocket`,
//! with the same behaviour as `udp-torsion` (echo or count; `?stats` answered with the count).
//! Prints `listening on ADDR` first.

use std::io::Write;
use std::net::UdpSocket;

use bench::args::Args;

fn main() {
    let args = Args::from_env();
    let port: u16 = args.get("port", 0);
    let echo = match args.get_str("mode").unwrap_or("echo") {
        "echo" => true,
        "sink" => false,
        m => {
            eprintln!("udp-blocking: unknown --mode {m:?} (echo|sink)");
            std::process::exit(2)
        }
    };
    let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("udp-blocking: cannot bind 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    if let Some(bytes) = args.get_opt::<i32>("rcvbuf") {
        set_rcvbuf(&sock, bytes);
    }
    println!("listening on {}", sock.local_addr().unwrap());
    let _ = std::io::stdout().flush();
    let mut buf = vec![0u8; 2048];
    let mut count: u64 = 0;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if &buf[..n] == b"?stats" {
            let _ = sock.send_to(count.to_string().as_bytes(), from);
            continue;
        }
        count += 1;
        if echo {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// SO_RCVBUF (std has no setter).
fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: passes a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        eprintln!(
            "udp-blocking: SO_RCVBUF: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
}
