//! `udp-bench [options]`: the datagram benchmark. Starts each UDP server in turn (the plain
//! blocking loop `udp-blocking`, and `udp-torsion` receiving with `recvmsg` and with
//! `recvmmsg` batches), drives it with its own load generator, and prints datagrams per second
//! and per second of *server* CPU (the figure of merit: what one server core does), the median
//! of `--reps` runs per server, all in one run on one machine.
//!
//! Modes (both on 127.0.0.1, small datagrams, `--size` bytes, default 32):
//! * `echo`: `--clients` sockets (default 4) each keep `--window` datagrams (default 32) in
//!   flight and send a new one for each echo; ops are echoes received. A socket that hears
//!   nothing for 20 ms resends its window (UDP may drop under load).
//! * `sink`: one socket sends as fast as it can; ops are the datagrams the server counted
//!   (asked for with a `?stats` datagram at the window's edges, with the sender paused).
//! * `burst`: the server is stopped (SIGSTOP) while `--burst` datagrams (default 2,000) are
//!   queued on its socket (4 MiB receive buffer), then continued and left to drain, again and
//!   again: the cost per datagram when a readiness event finds many waiting, where `recvmmsg`
//!   pays. Ops are the datagrams the server counted.
//!
//! Options: `--modes echo,sink,burst`, `--servers blocking,torsion-recvmsg,torsion-recvmmsg`,
//! `--warmup 1`, `--duration 3`, `--reps 3`, `--pin` (server on core 0 via `taskset`, when
//! present). To drive a server started elsewhere once: `--port N --server-pid PID --mode M`.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::args::Args;
use bench::procinfo;
use bench::sys::{self, Epoll, EPOLLIN};

#[derive(Clone, Copy)]
struct Load {
    size: usize,
    clients: usize,
    window: usize,
    warmup: Duration,
    duration: Duration,
    burst: usize,
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
struct Measure {
    ops: u64,
    wall: f64,
    server_cpu: f64,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall
    }
    fn per_cpu(&self) -> f64 {
        if self.server_cpu > 0.0 {
            self.ops as f64 / self.server_cpu
        } else {
            0.0
        }
    }
}

fn cpu(pid: i32) -> f64 {
    procinfo::cpu_time(pid)
        .map(|(d, _)| d.as_secs_f64())
        .unwrap_or_else(|| {
            eprintln!("udp-bench: cannot read the server's CPU time");
            std::process::exit(1)
        })
}

fn echo(port: u16, pid: i32, load: Load) -> Measure {
    let ep = Epoll::new().unwrap();
    let socks: Vec<UdpSocket> = (0..load.clients)
        .map(|i| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(("127.0.0.1", port)).unwrap();
            s.set_nonblocking(true).unwrap();
            ep.add(s.as_raw_fd(), EPOLLIN, i as u64).unwrap();
            s
        })
        .collect();
    let payload = vec![b'x'; load.size];
    let mut buf = vec![0u8; 65536];
    let mut last_heard = vec![Instant::now(); socks.len()];
    let fill = |s: &UdpSocket| {
        for _ in 0..load.window {
            let _ = s.send(&payload);
        }
    };
    socks.iter().for_each(fill);
    let mut events = sys::event_buffer(64);
    let start = Instant::now();
    let warm_end = start + load.warmup;
    let end = warm_end + load.duration;
    let mut ops: u64 = 0;
    let mut at_start: Option<(u64, Instant, f64)> = None;
    loop {
        let now = Instant::now();
        if at_start.is_none() && now >= warm_end {
            at_start = Some((ops, now, cpu(pid)));
        }
        if now >= end {
            break;
        }
        let n = ep.wait(&mut events, 5).unwrap();
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let s = &socks[i];
            while s.recv(&mut buf).is_ok() {
                ops += 1;
                let _ = s.send(&payload);
                last_heard[i] = Instant::now();
            }
        }
        let now = Instant::now();
        for (i, s) in socks.iter().enumerate() {
            if now.duration_since(last_heard[i]) > Duration::from_millis(20) {
                fill(s);
                last_heard[i] = now;
            }
        }
    }
    let (ops0, t0, cpu0) = at_start.expect("a window");
    Measure {
        ops: ops - ops0,
        wall: t0.elapsed().as_secs_f64(),
        server_cpu: cpu(pid) - cpu0,
    }
}

/// Asks the server how many datagrams it counted.
fn stats(port: u16) -> u64 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        s.send_to(b"?stats", ("127.0.0.1", port)).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            return std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
        }
    }
    eprintln!("udp-bench: the server does not answer ?stats");
    std::process::exit(1)
}

fn sink(port: u16, pid: i32, load: Load) -> Measure {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    let payload = vec![b'x'; load.size];
    let blast = |until: Instant| {
        while Instant::now() < until {
            for _ in 0..256 {
                let _ = s.send(&payload);
            }
        }
    };
    blast(Instant::now() + load.warmup);
    // Paused: the server drains its queue, then the window's edges are read.
    std::thread::sleep(Duration::from_millis(100));
    let (n0, c0) = (stats(port), cpu(pid));
    let t0 = Instant::now();
    blast(t0 + load.duration);
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let (n1, c1) = (stats(port), cpu(pid));
    Measure {
        ops: n1 - n0,
        wall,
        server_cpu: c1 - c0,
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on the server child this process started.
    if unsafe { libc::kill(pid, sig) } != 0 {
        eprintln!("udp-bench: kill: {}", std::io::Error::last_os_error());
        std::process::exit(1)
    }
}

fn burst(port: u16, pid: i32, load: Load) -> Measure {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    let payload = vec![b'x'; load.size];
    let one = || {
        signal(pid, libc::SIGSTOP);
        // Let the stop take effect before queueing.
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..load.burst {
            let _ = s.send(&payload);
        }
        signal(pid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(30));
    };
    let warm_end = Instant::now() + load.warmup;
    while Instant::now() < warm_end {
        one();
    }
    let (n0, c0) = (stats(port), cpu(pid));
    let t0 = Instant::now();
    while t0.elapsed() < load.duration {
        one();
    }
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let (n1, c1) = (stats(port), cpu(pid));
    Measure {
        ops: n1 - n0,
        wall,
        server_cpu: c1 - c0,
    }
}

fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    p.join(name)
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: &str, mode: &str, pin: bool) -> (Server, u16) {
    let (name, extra): (&str, &[&str]) = match server {
        "blocking" => ("udp-blocking", &[]),
        "torsion-recvmsg" => ("udp-torsion", &["--batch", "1"]),
        "torsion-recvmmsg" => ("udp-torsion", &["--batch", "32"]),
        other => {
            eprintln!("udp-bench: unknown server {other:?}");
            std::process::exit(2)
        }
    };
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin(name));
        c
    } else {
        Command::new(bin(name))
    };
    let mut child = cmd
        .args(["--port", "0", "--rcvbuf", "4194304"])
        .args(["--mode", if mode == "echo" { "echo" } else { "sink" }])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!(
                "udp-bench: cannot start {name} (build with `cargo build --release -p bench`): {e}"
            );
            std::process::exit(1)
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("udp-bench: {name} said {line:?}");
            std::process::exit(1)
        });
    (Server(child), port)
}

fn run(mode: &str, port: u16, pid: i32, load: Load) -> Measure {
    match mode {
        "echo" => echo(port, pid, load),
        "sink" => sink(port, pid, load),
        "burst" => burst(port, pid, load),
        other => {
            eprintln!("udp-bench: unknown mode {other:?} (echo|sink|burst)");
            std::process::exit(2)
        }
    }
}

fn main() {
    let args = Args::from_env();
    let load = Load {
        size: args.get("size", 32usize).clamp(1, 2048),
        clients: args.get("clients", 4usize).clamp(1, 256),
        window: args.get("window", 32usize).clamp(1, 4096),
        warmup: Duration::from_secs_f64(args.get("warmup", 1.0f64).clamp(0.0, 60.0)),
        duration: Duration::from_secs_f64(args.get("duration", 3.0f64).clamp(0.1, 600.0)),
        burst: args.get("burst", 2000usize).clamp(1, 1_000_000),
    };
    if let Some(port) = args.get_opt::<u16>("port") {
        let pid: i32 = args.require("server-pid");
        let mode = args.get_str("mode").unwrap_or("echo").to_string();
        let m = run(&mode, port, pid, load);
        println!(
            "mode={mode} ops={} window_s={:.3} rate={:.0} server_cpu_s={:.3} per_server_cpu_s={:.0}",
            m.ops,
            m.wall,
            m.rate(),
            m.server_cpu,
            m.per_cpu()
        );
        return;
    }
    let modes = args
        .get_str("modes")
        .unwrap_or("echo,sink,burst")
        .to_string();
    let servers = args
        .get_str("servers")
        .unwrap_or("blocking,torsion-recvmsg,torsion-recvmmsg")
        .to_string();
    let reps = args.get("reps", 3usize).clamp(1, 100);
    let pin = args.get("pin", false);
    println!(
        "# udp-bench: {} B datagrams, {} clients x {} in flight (echo), {:?} windows, median of {reps}",
        load.size, load.clients, load.window, load.duration
    );
    println!(
        "{:<6} {:<18} {:>12} {:>14} {:>10}",
        "mode", "server", "dgrams/s", "per server-CPU-s", "server util"
    );
    for mode in modes.split(',') {
        for server in servers.split(',') {
            let mut runs: Vec<Measure> = (0..reps)
                .map(|_| {
                    let (child, port) = start(server, mode, pin);
                    let m = run(mode, port, child.0.id() as i32, load);
                    drop(child);
                    m
                })
                .collect();
            runs.sort_by(|a, b| a.per_cpu().total_cmp(&b.per_cpu()));
            let m = runs[runs.len() / 2];
            println!(
                "{:<6} {:<18} {:>12.0} {:>16.0} {:>10.2}",
                mode,
                server,
                m.rate(),
                m.per_cpu(),
                m.server_cpu / m.wall
            );
        }
    }
}
