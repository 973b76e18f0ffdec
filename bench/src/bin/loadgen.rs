//! `loadgen SCENARIO --port N [--server-pid PID] [options]`: the load generator.
//!
//! A single-threaded, edge-triggered epoll loop on raw syscalls, so that it costs no more CPU
//! per operation than the servers it drives (it shares a 2-core machine with them). Each run
//! warms up, then measures one window; when `--server-pid` is given it samples that process's
//! CPU time (and memory) at the window's edges, so that the figure of merit, operations per
//! second of *server* CPU, covers exactly the measured operations.
//!
//! Scenarios (all against 127.0.0.1 only, all bounded in time):
//! * `pingpong --conns C --size M`: each connection sends M bytes and waits for their echo
//!   before sending again. Round trips/s, p50 and p99 latency.
//! * `stream [--chunk K] [--inflight B]`: one connection writes as fast as it can and reads
//!   the echo back (at most B bytes in flight). MiB/s echoed.
//! * `churn [--concurrency K] [--size M]`: connect, one echo of M bytes, close with RST;
//!   K connections in flight at once. Connections/s, p50 and p99 of connect-to-echo time.
//! * `idle --conns N [--size M]`: opens N connections, echoes once on each, waits, and reports
//!   the server's RSS growth per connection (needs `--server-pid`).
//!
//! Common options: `--warmup SECONDS` (default 1), `--duration SECONDS` (default 5).
//!
//! Output: one line of `key=value` pairs on stdout, e.g.
//! `scenario=pingpong conns=100 size=64 window_s=5.001 ops=1234567 rate=246850.1 ...`.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bench::args::Args;
use bench::procinfo::{self, CpuSource};
use bench::sys::{self, Epoll, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT};

fn main() {
    let args = Args::from_env();
    let Some(scenario) = args.positional.first().cloned() else {
        eprintln!("usage: loadgen pingpong|stream|churn|idle --port N [--server-pid PID] ...");
        std::process::exit(2);
    };
    sys::raise_nofile_limit();
    let cfg = Config {
        port: args.require("port"),
        server_pid: args.get_opt("server-pid"),
        warmup: Duration::from_secs_f64(args.get("warmup", 1.0)),
        duration: Duration::from_secs_f64(args.get("duration", 5.0)),
    };
    let mut report = match scenario.as_str() {
        "pingpong" => pingpong(&cfg, args.get("conns", 100), args.get("size", 64)),
        "stream" => stream(
            &cfg,
            args.get("chunk", 64 * 1024),
            args.get("inflight", 2 * 1024 * 1024),
        ),
        "churn" => churn(&cfg, args.get("concurrency", 16), args.get("size", 64)),
        "idle" => idle(
            &cfg,
            args.get("conns", 10_000),
            args.get("size", 64),
            Duration::from_millis(args.get("settle-ms", 500)),
        ),
        other => {
            eprintln!("loadgen: unknown scenario {other:?}");
            std::process::exit(2);
        }
    };
    report.fields.insert(0, ("scenario".into(), scenario));
    println!("{}", report.line());
    if report.fatal {
        std::process::exit(1);
    }
}

struct Config {
    port: u16,
    server_pid: Option<i32>,
    warmup: Duration,
    duration: Duration,
}

/// One result line.
#[derive(Default)]
struct Report {
    fields: Vec<(String, String)>,
    fatal: bool,
}

impl Report {
    fn put(&mut self, k: &str, v: impl ToString) {
        self.fields.push((k.to_string(), v.to_string()));
    }

    fn line(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// CPU and wall time sampled at the start of the measured window.
struct Meter {
    pid: Option<i32>,
    t0: Instant,
    server0: Option<(Duration, CpuSource)>,
    own0: Duration,
}

impl Meter {
    fn start(pid: Option<i32>) -> Meter {
        Meter {
            pid,
            server0: pid.and_then(procinfo::cpu_time),
            own0: sys::own_cpu_time(),
            t0: Instant::now(),
        }
    }

    /// Closes the window: wall time, server CPU, own CPU, and the rate fields for `ops`.
    fn finish(self, ops: u64, report: &mut Report) {
        let window = self.t0.elapsed().as_secs_f64();
        let own = (sys::own_cpu_time() - self.own0).as_secs_f64();
        let server = self.pid.and_then(procinfo::cpu_time);
        report.put("window_s", format!("{window:.3}"));
        report.put("ops", ops);
        report.put("rate", format!("{:.1}", ops as f64 / window));
        match (self.server0, server) {
            (Some((a, src)), Some((b, _))) => {
                let cpu = (b - a).as_secs_f64();
                report.put("server_cpu_s", format!("{cpu:.4}"));
                report.put("server_util", format!("{:.3}", cpu / window));
                if cpu > 0.0 {
                    report.put("per_server_cpu_s", format!("{:.1}", ops as f64 / cpu));
                }
                report.put(
                    "cpu_source",
                    match src {
                        CpuSource::Clock => "clock",
                        CpuSource::ProcStat => "procstat",
                    },
                );
            }
            (Some(_), None) => {
                report.put("server_gone", 1);
                report.fatal = true;
            }
            _ => {}
        }
        if let Some(rss) = self.pid.and_then(procinfo::rss_kib) {
            report.put("server_rss_kib", rss);
        }
        report.put("loadgen_cpu_s", format!("{own:.4}"));
        report.put("loadgen_util", format!("{:.3}", own / window));
        if own > 0.0 {
            report.put("per_loadgen_cpu_s", format!("{:.1}", ops as f64 / own));
        }
    }
}

/// p50 and p99 of latencies in nanoseconds, in microseconds.
fn percentiles(report: &mut Report, samples: &mut [u32]) {
    if samples.is_empty() {
        return;
    }
    for (name, q) in [("p50_us", 0.50), ("p99_us", 0.99)] {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        let (_, v, _) = samples.select_nth_unstable(i);
        report.put(name, format!("{:.1}", f64::from(*v) / 1000.0));
    }
}

fn nanos(d: Duration) -> u32 {
    d.as_nanos().min(u128::from(u32::MAX)) as u32
}

/// Where a timed run is: warming up, measuring, or done.
struct Phases {
    warm_end: Instant,
    end: Instant,
    meter: Option<Meter>,
    measuring: bool,
    ops_at_start: u64,
}

impl Phases {
    fn new(cfg: &Config) -> Phases {
        let now = Instant::now();
        Phases {
            warm_end: now + cfg.warmup,
            end: now + cfg.warmup + cfg.duration,
            meter: None,
            measuring: false,
            ops_at_start: 0,
        }
    }

    /// Advances the phase; returns false once the window is over.
    fn tick(&mut self, now: Instant, ops: u64, pid: Option<i32>) -> bool {
        if !self.measuring && now >= self.warm_end {
            self.measuring = true;
            self.ops_at_start = ops;
            self.meter = Some(Meter::start(pid));
        }
        now < self.end
    }

    fn finish(self, ops: u64, report: &mut Report) {
        let measured = ops - self.ops_at_start;
        self.meter
            .unwrap_or_else(|| Meter::start(None))
            .finish(measured, report);
    }
}

fn connect_all(cfg: &Config, n: usize) -> Vec<RawFd> {
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        match sys::connect_blocking(cfg.port, Duration::from_secs(5)) {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                eprintln!("loadgen: connect to 127.0.0.1:{}: {e}", cfg.port);
                std::process::exit(1);
            }
        }
    }
    fds
}

// ---------------------------------------------------------------------------------------------
// ping-pong

struct PingConn {
    fd: RawFd,
    sent_at: Instant,
    written: usize,
    got: usize,
    dead: bool,
}

fn pingpong(cfg: &Config, conns: usize, size: usize) -> Report {
    let mut report = Report::default();
    report.put("conns", conns);
    report.put("size", size);
    let ep = Epoll::new().expect("epoll_create1");
    let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; size.max(1)];
    let fds = connect_all(cfg, conns);
    let now = Instant::now();
    let mut cs: Vec<PingConn> = fds
        .iter()
        .map(|&fd| PingConn {
            fd,
            sent_at: now,
            written: 0,
            got: 0,
            dead: false,
        })
        .collect();
    for (i, c) in cs.iter().enumerate() {
        let _ = sys::set_nodelay(c.fd);
        ep.add(c.fd, EPOLLIN | EPOLLOUT | EPOLLET, i as u64)
            .expect("epoll_ctl");
    }
    let mut phases = Phases::new(cfg);
    let mut samples: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut ops: u64 = 0;
    let mut errors: u64 = 0;
    let mut alive = conns;
    // Send the first message on every connection.
    for c in &mut cs {
        c.sent_at = Instant::now();
        if !ping_write(c, &msg) {
            c.dead = true;
            sys::close(c.fd);
            errors += 1;
            alive -= 1;
        }
    }
    let mut events = sys::event_buffer(1024);
    while alive > 0 {
        let n = ep.wait(&mut events, 100).expect("epoll_wait");
        for ev in &events[..n] {
            let c = &mut cs[ev.u64 as usize];
            if c.dead {
                continue;
            }
            if c.written < size {
                if !ping_write(c, &msg) {
                    c.dead = true;
                } else if c.written < size {
                    continue;
                }
            }
            // Read exactly what is still missing of the echo: never more.
            while !c.dead {
                match sys::read(c.fd, &mut buf[..size - c.got]) {
                    Ok(0) => {
                        c.dead = true;
                    }
                    Ok(k) => {
                        c.got += k;
                        if c.got < size {
                            continue;
                        }
                        let t = Instant::now();
                        if phases.measuring {
                            samples.push(nanos(t - c.sent_at));
                        }
                        ops += 1;
                        c.got = 0;
                        c.written = 0;
                        c.sent_at = t;
                        if !ping_write(c, &msg) {
                            c.dead = true;
                        }
                    }
                    Err(e) if sys::would_block(&e) => {}
                    Err(_) => c.dead = true,
                }
                break;
            }
            if c.dead {
                errors += 1;
                alive -= 1;
                sys::close(c.fd);
            }
        }
        if !phases.tick(Instant::now(), ops, cfg.server_pid) {
            break;
        }
    }
    // The meter must be read before the connections close (closing costs server CPU).
    phases.finish(ops, &mut report);
    percentiles(&mut report, &mut samples);
    report.put("errors", errors);
    report.put("total_ops", ops);
    if alive == 0 {
        report.fatal = true;
    }
    for c in &cs {
        if !c.dead {
            sys::close(c.fd);
        }
    }
    report
}

/// Writes what is left of the message; false on a broken connection.
fn ping_write(c: &mut PingConn, msg: &[u8]) -> bool {
    while c.written < msg.len() {
        match sys::write(c.fd, &msg[c.written..]) {
            Ok(k) => c.written += k,
            Err(e) if sys::would_block(&e) => return true,
            Err(_) => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// streaming

fn stream(cfg: &Config, chunk: usize, inflight: usize) -> Report {
    let mut report = Report::default();
    report.put("conns", 1);
    report.put("size", chunk);
    let ep = Epoll::new().expect("epoll_create1");
    let fd = connect_all(cfg, 1)[0];
    let _ = sys::set_nodelay(fd);
    ep.add(fd, EPOLLIN | EPOLLOUT | EPOLLET, 0)
        .expect("epoll_ctl");
    let out: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut sent, mut received) = (0u64, 0u64);
    let mut phases = Phases::new(cfg);
    let mut events = sys::event_buffer(8);
    let mut broken = false;
    'run: loop {
        // Edge-triggered: write until EAGAIN (or the in-flight cap), read until EAGAIN.
        while sent - received < inflight as u64 {
            let room = (inflight as u64 - (sent - received)).min(chunk as u64) as usize;
            match sys::write(fd, &out[..room]) {
                Ok(k) => sent += k as u64,
                Err(e) if sys::would_block(&e) => break,
                Err(_) => {
                    broken = true;
                    break 'run;
                }
            }
        }
        loop {
            match sys::read(fd, &mut buf) {
                Ok(0) => {
                    broken = true;
                    break 'run;
                }
                Ok(k) => received += k as u64,
                Err(e) if sys::would_block(&e) => break,
                Err(_) => {
                    broken = true;
                    break 'run;
                }
            }
        }
        if !phases.tick(Instant::now(), received, cfg.server_pid) {
            break;
        }
        ep.wait(&mut events, 100).expect("epoll_wait");
    }
    // `ops` are bytes here; the report adds MiB/s.
    phases.finish(received, &mut report);
    let window: f64 = report
        .fields
        .iter()
        .find(|(k, _)| k == "window_s")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1.0);
    let bytes: f64 = report
        .fields
        .iter()
        .find(|(k, _)| k == "ops")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0);
    report.put("mib_s", format!("{:.1}", bytes / window / 1048576.0));
    report.put("errors", u8::from(broken));
    report.fatal = broken;
    sys::close(fd);
    report
}

// ---------------------------------------------------------------------------------------------
// connection churn

#[derive(Clone, Copy)]
struct ChurnConn {
    fd: RawFd,
    started: Instant,
    written: usize,
    got: usize,
}

fn churn(cfg: &Config, concurrency: usize, size: usize) -> Report {
    let mut report = Report::default();
    report.put("conns", concurrency);
    report.put("size", size);
    let ep = Epoll::new().expect("epoll_create1");
    let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; size.max(1)];
    let mut slots: Vec<ChurnConn> = Vec::with_capacity(concurrency);
    let mut errors: u64 = 0;
    for i in 0..concurrency {
        slots.push(ChurnConn {
            fd: -1,
            started: Instant::now(),
            written: 0,
            got: 0,
        });
        if churn_start(&ep, cfg.port, &mut slots[i], i, &msg).is_err() {
            errors += 1;
        }
    }
    let mut phases = Phases::new(cfg);
    let mut samples: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut ops: u64 = 0;
    let mut events = sys::event_buffer(1024);
    let max_errors = 10_000;
    loop {
        let n = ep.wait(&mut events, 100).expect("epoll_wait");
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let c = &mut slots[i];
            if c.fd < 0 {
                continue;
            }
            let outcome = churn_step(c, ev.events, &msg, &mut buf);
            match outcome {
                Step::Wait => continue,
                Step::Done => {
                    let t = Instant::now();
                    if phases.measuring {
                        samples.push(nanos(t - c.started));
                    }
                    ops += 1;
                    let _ = sys::set_linger_zero(c.fd);
                    sys::close(c.fd);
                }
                Step::Failed => {
                    errors += 1;
                    sys::close(c.fd);
                }
            }
            c.fd = -1;
            while churn_start(&ep, cfg.port, &mut slots[i], i, &msg).is_err() {
                errors += 1;
                if errors > max_errors {
                    break;
                }
            }
        }
        if errors > max_errors || !phases.tick(Instant::now(), ops, cfg.server_pid) {
            break;
        }
    }
    phases.finish(ops, &mut report);
    percentiles(&mut report, &mut samples);
    report.put("errors", errors);
    report.fatal = errors > max_errors;
    for c in &slots {
        if c.fd >= 0 {
            let _ = sys::set_linger_zero(c.fd);
            sys::close(c.fd);
        }
    }
    report
}

enum Step {
    Wait,
    Done,
    Failed,
}

/// Opens a connection in slot `i` and tries to send at once (on loopback the handshake is
/// usually over when `connect` returns).
fn churn_start(ep: &Epoll, port: u16, c: &mut ChurnConn, i: usize, msg: &[u8]) -> Result<(), ()> {
    let fd = sys::tcp_socket().map_err(drop)?;
    match sys::connect_loopback(fd, port) {
        Ok(()) => {}
        Err(e) if sys::is_in_progress(&e) => {}
        Err(_) => {
            sys::close(fd);
            return Err(());
        }
    }
    *c = ChurnConn {
        fd,
        started: Instant::now(),
        written: 0,
        got: 0,
    };
    churn_write(c, msg)?;
    if ep.add(fd, EPOLLIN | EPOLLOUT | EPOLLET, i as u64).is_err() {
        sys::close(fd);
        c.fd = -1;
        return Err(());
    }
    Ok(())
}

fn churn_write(c: &mut ChurnConn, msg: &[u8]) -> Result<(), ()> {
    while c.written < msg.len() {
        match sys::write(c.fd, &msg[c.written..]) {
            Ok(k) => c.written += k,
            Err(e)
                if sys::would_block(&e)
                    || e.raw_os_error() == Some(libc::ENOTCONN)
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                return Ok(()); // still connecting: the writable edge comes back here
            }
            Err(_) => {
                sys::close(c.fd);
                c.fd = -1;
                return Err(());
            }
        }
    }
    Ok(())
}

fn churn_step(c: &mut ChurnConn, events: u32, msg: &[u8], buf: &mut [u8]) -> Step {
    if c.written < msg.len() {
        if events & (EPOLLERR | EPOLLHUP) != 0 && sys::take_socket_error(c.fd).is_err() {
            return Step::Failed;
        }
        while c.written < msg.len() {
            match sys::write(c.fd, &msg[c.written..]) {
                Ok(k) => c.written += k,
                Err(e) if sys::would_block(&e) || e.raw_os_error() == Some(libc::ENOTCONN) => {
                    return Step::Wait
                }
                Err(_) => return Step::Failed,
            }
        }
    }
    loop {
        match sys::read(c.fd, &mut buf[..msg.len() - c.got]) {
            Ok(0) => return Step::Failed,
            Ok(k) => {
                c.got += k;
                if c.got == msg.len() {
                    return Step::Done;
                }
            }
            Err(e) if sys::would_block(&e) => return Step::Wait,
            Err(_) => return Step::Failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// idle connections

fn idle(cfg: &Config, conns: usize, size: usize, settle: Duration) -> Report {
    let mut report = Report::default();
    report.put("conns", conns);
    report.put("size", size);
    let Some(pid) = cfg.server_pid else {
        eprintln!("loadgen idle: --server-pid is required");
        std::process::exit(2);
    };
    std::thread::sleep(settle);
    let before = procinfo::rss_kib(pid).unwrap_or(0);
    let meter = Meter::start(Some(pid));
    let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    let mut streams = Vec::with_capacity(conns);
    let mut errors = 0u64;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.port));
    for _ in 0..conns {
        let r = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(
            |mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(&msg)?;
                s.read_exact(&mut back)?;
                Ok(s)
            },
        );
        match r {
            Ok(s) => streams.push(s),
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("loadgen idle: {e}");
                }
            }
        }
    }
    std::thread::sleep(settle);
    let after = procinfo::rss_kib(pid).unwrap_or(0);
    let opened = streams.len() as u64;
    meter.finish(opened, &mut report);
    report.put("rss_before_kib", before);
    report.put("rss_after_kib", after);
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / opened.max(1) as f64;
    report.put("bytes_per_conn", format!("{per_conn:.0}"));
    report.put("errors", errors);
    report.fatal = opened == 0;
    drop(streams);
    report
}
