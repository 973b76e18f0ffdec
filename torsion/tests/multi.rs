//! One reactor per core: N reactors on N threads sharing a port through SO_REUSEPORT, reaching
//! each other through their handles, all stopping together.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use torsion::reactor::multi::{MultiOptions, MultiReactor, MAX_REACTORS};
use torsion::reactor::{Phase, SystemEvent};
use torsion::tcp::ListenOptions;
use torsion::{Backend, Context, Error, Factory, Protocol};

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

/// Each reactor's statistics, asked for from this thread through its handle.
fn stats_of(cluster: &MultiReactor) -> Vec<torsion::reactor::Stats> {
    cluster
        .handles()
        .iter()
        .map(|h| {
            h.stats()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .unwrap()
        })
        .collect()
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Epoll, Backend::Poll];
    if Backend::IoUring.available() {
        b.push(Backend::IoUring);
    }
    b
}

/// Two reactors on one port: every client is served, by one or the other, and both serve.
#[test]
fn reactors_share_a_port_and_stop_together() {
    for backend in backends() {
        let port = Arc::new(AtomicU16::new(0));
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let (p, s) = (port.clone(), shutdowns.clone());
        let opts = MultiOptions {
            reactors: 2,
            backend: Some(backend),
            handle_stop_signals: false,
            ..MultiOptions::default()
        };
        let cluster = MultiReactor::start(opts, move |reactor, peers| {
            assert_eq!(reactor.backend(), Some(backend));
            let reuse = ListenOptions {
                reuse_port: true,
                ..ListenOptions::default()
            };
            let at = ("127.0.0.1", p.load(Ordering::SeqCst));
            let l = reactor.listen_tcp_with(at, Factory::for_protocol(|| Echo), reuse)?;
            if peers.index() > 0 {
                assert_eq!(l.port(), p.load(Ordering::SeqCst), "the same port");
            }
            p.store(l.port(), Ordering::SeqCst);
            let s = s.clone();
            reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move |_| {
                s.fetch_add(1, Ordering::SeqCst);
            });
            Ok(())
        })
        .unwrap();
        let port = port.load(Ordering::SeqCst);
        const CLIENTS: usize = 64;
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(format!("client {i:03}").as_bytes()).unwrap();
            clients.push(c);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut got = [0u8; 10];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, *format!("client {i:03}").as_bytes(), "{backend}");
        }
        drop(clients);
        // Each reactor's statistics, asked for from this thread.
        let accepted: Vec<u64> = stats_of(&cluster)
            .iter()
            .map(|s| s.connections_accepted)
            .collect();
        assert_eq!(accepted.iter().sum::<u64>(), CLIENTS as u64, "{backend}");
        // The kernel hashes each client's address to a socket: with 64 clients, both get some
        // (all on one would have a probability of 2^-63).
        assert!(accepted.iter().all(|&n| n > 0), "{backend}: {accepted:?}");
        cluster.stop();
        cluster.join().unwrap();
        assert_eq!(shutdowns.load(Ordering::SeqCst), 2, "{backend}");
    }
}

/// A stop on one reactor stops all; reactors call each other through their handles.
#[test]
fn one_reactor_stopping_stops_all_and_peers_talk_through_handles() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    let opts = MultiOptions {
        reactors: 3,
        handle_stop_signals: false,
        ..MultiOptions::default()
    };
    let cluster = MultiReactor::start(opts, move |reactor, peers| {
        let me = peers.index();
        let l2 = l.clone();
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move |_| {
            l2.lock().unwrap().push(format!("{me} stopped"));
        });
        if me == 2 {
            // The last reactor, once running, sends a ping round the ring: 2 -> 0 -> 1, and 1
            // stops its own reactor, which stops the others.
            let handles = peers.handles().to_vec();
            let l = l.clone();
            reactor.call_when_running(move |_| {
                let h1 = handles[1].clone();
                let l = l.clone();
                handles[0]
                    .call_from_thread(move |_| {
                        l.lock().unwrap().push("0 got the ping".into());
                        h1.call_from_thread(move |r| r.stop().unwrap()).unwrap();
                    })
                    .unwrap();
            });
        }
        Ok(())
    })
    .unwrap();
    cluster.join().unwrap();
    let mut log = log.lock().unwrap().clone();
    log.sort();
    assert_eq!(
        log,
        ["0 got the ping", "0 stopped", "1 stopped", "2 stopped"]
    );
}

#[test]
fn a_failing_set_up_stops_the_reactors_already_started() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let opts = MultiOptions {
        reactors: 3,
        handle_stop_signals: false,
        ..MultiOptions::default()
    };
    let err = MultiReactor::start(opts, move |_, peers| {
        if peers.index() == 1 {
            return Err(Error::BadAddress("refused by the test".into()));
        }
        s.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, Error::BadAddress(_)), "{err:?}");
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "reactor 2 was never set up"
    );
}

#[test]
fn reactor_counts_are_range_checked_and_pinning_works() {
    let opts = MultiOptions {
        reactors: MAX_REACTORS + 1,
        ..MultiOptions::default()
    };
    let err = MultiReactor::start(opts, |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    let opts = MultiOptions {
        reactors: 2,
        pin: true,
        handle_stop_signals: false,
        ..MultiOptions::default()
    };
    let cluster = MultiReactor::start(opts, |_, _| Ok(())).unwrap();
    cluster.stop();
    cluster.join().unwrap();
}

/// The example server: Ctrl-C stops every reactor, which print their statistics.
#[test]
fn the_echo_multi_example_serves_and_stops_on_ctrl_c() {
    let mut exe = std::env::current_exe().unwrap();
    exe.pop();
    if exe.ends_with("deps") {
        exe.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "torsion", "--example", "echo_multi"]);
    if exe.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success());
    let mut child = Command::new(exe.join("examples").join("echo_multi"))
        .args(["--port", "0", "--reactors", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("2 reactors"), "{line}");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .trim_end_matches(['.', ','])
        .to_string();
    for _ in 0..8 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("reactor 0:"), "{err}");
    assert!(err.contains("reactor 1:"), "{err}");
    let accepted: u64 = err
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("accepted="))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(accepted, 8, "{err}");
}

/// io_uring reactors take the buffer ring `MultiOptions::io_uring` gives: two 64-byte buffers
/// each, run dry by 64 KiB echoes, and nothing lost.
#[test]
fn io_uring_reactors_take_the_buffer_ring_they_are_given() {
    if !Backend::IoUring.available() {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();
    let opts = MultiOptions {
        reactors: 2,
        backend: Some(Backend::IoUring),
        handle_stop_signals: false,
        io_uring: Some(torsion::poller::UringOptions::new(2, 64).unwrap()),
        ..MultiOptions::default()
    };
    let cluster = MultiReactor::start(opts, move |reactor, _| {
        let reuse = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let at = ("127.0.0.1", p.load(Ordering::SeqCst));
        let l = reactor.listen_tcp_with(at, Factory::for_protocol(|| Echo), reuse)?;
        p.store(l.port(), Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    let port = port.load(Ordering::SeqCst);
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    for _ in 0..8 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == data, "the echo came back corrupted");
    }
    let stats = stats_of(&cluster);
    let served: Vec<_> = stats.iter().filter(|s| s.bytes_read > 0).collect();
    assert!(!served.is_empty(), "{stats:?}");
    for s in served {
        assert!(s.completions > 0 && s.buffer_ring_exhausted > 0, "{s}");
    }
    cluster.stop();
    cluster.join().unwrap();
}
