//! TCP transports, protocols and factories: every test on select, poll and epoll, each ending
//! with the leak check.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::testing::run_until;
use torsion::{
    reactor_test, Address, ClientFactory, ConnectError, Connector, Context, Factory, Producer,
    Protocol, ProtocolFactory, Reactor, Reason, Transport,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What happened to one connection.
#[derive(Default)]
struct Log {
    events: RefCell<Vec<String>>,
    data: RefCell<Vec<u8>>,
    lost: Cell<u32>,
    in_callback: Cell<bool>,
}

type DataHook = Box<dyn FnMut(&Transport, &[u8])>;
type MadeHook = Box<dyn FnMut(&Transport)>;
type LostHook = Box<dyn FnMut(&Reason)>;

/// A protocol that records everything and runs optional hooks.
struct Rec {
    log: Rc<Log>,
    on_made: Option<MadeHook>,
    on_data: Option<DataHook>,
    on_lost: Option<LostHook>,
    /// Stop the reactor on the first data.
    stop_on_data: bool,
}

impl Rec {
    fn new(log: Rc<Log>) -> Rec {
        Rec {
            log,
            on_made: None,
            on_data: None,
            on_lost: None,
            stop_on_data: false,
        }
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        self.log.events.borrow_mut().push("made".into());
        self.log.in_callback.set(true);
        if let Some(h) = &mut self.on_made {
            h(t);
        }
        self.log.in_callback.set(false);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        assert!(!self.log.in_callback.get(), "nested callback");
        self.log.in_callback.set(true);
        self.log.data.borrow_mut().extend_from_slice(data);
        if let Some(h) = &mut self.on_data {
            h(t, data);
        }
        if self.stop_on_data {
            cx.reactor().stop().unwrap();
        }
        self.log.in_callback.set(false);
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, reason: Reason) {
        assert!(
            !self.log.in_callback.get(),
            "connection_lost nested inside another callback"
        );
        self.log.lost.set(self.log.lost.get() + 1);
        self.log
            .events
            .borrow_mut()
            .push(format!("lost:{reason:?}"));
        if let Some(h) = &mut self.on_lost {
            h(&reason);
        }
    }
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        t.write(data);
    }
}

/// Iterates until only `n` descriptors are left (the server side of closed connections has seen
/// the close).
fn settle(r: &Reactor, n: usize) {
    run_until(r, secs(10), || r.descriptor_count() == n);
}

/// A checksum that notices order and content (FNV-1a).
fn fnv(h: &mut u64, data: &[u8]) {
    for b in data {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// A tiny deterministic PRNG for sizes.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client factory that records the connector callbacks.
#[derive(Default)]
struct Recorder {
    log: Rc<Log>,
    calls: RefCell<Vec<String>>,
}
impl ProtocolFactory for Recorder {
    fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Rec::new(self.log.clone())))
    }
}
impl ClientFactory for Recorder {
    fn started_connecting(&self, _: &Connector) {
        self.calls.borrow_mut().push("started".into());
    }
    fn client_connection_failed(&self, _: &Connector, reason: ConnectError) {
        self.calls.borrow_mut().push(format!("failed:{reason:?}"));
    }
    fn client_connection_lost(&self, _: &Connector, reason: Reason) {
        self.calls.borrow_mut().push(format!("lost:{reason:?}"));
    }
}

reactor_test! {
    fn echo_round_trip_over_ipv4_and_ipv6(reactor) {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(port) = reactor.listen_tcp(addr, Factory::for_protocol(|| Echo)) else {
                continue; // no IPv6 on this host
            };
            let log = Rc::new(Log::default());
            let l = log.clone();
            let factory = Factory::for_protocol(move || {
                let mut p = Rec::new(l.clone());
                p.on_made = Some(Box::new(|t| t.write(b"hello, world")));
                p.on_data = Some(Box::new(|t, _| {
                    if t.buffered() == 0 {
                        t.lose_connection();
                    }
                }));
                p
            });
            let host = port.address().as_tcp().unwrap().ip().to_string();
            reactor.connect_tcp(&host, port.port(), factory, secs(5));
            run_until(reactor, secs(10), || log.lost.get() == 1);
            assert_eq!(&*log.data.borrow(), b"hello, world");
            assert_eq!(log.events.borrow()[1], "lost:ConnectionDone");
            settle(reactor, 1);
            port.stop_listening();
        }
    }

    fn sixty_four_mib_through_write_and_write_sequence_arrive_intact(reactor) {
        const TOTAL: usize = 64 << 20;
        for vectored in [false, true] {
            let expected = Rc::new(Cell::new(0xcbf2_9ce4_8422_2325u64));
            let e = expected.clone();
            let port = reactor
                .listen_tcp(
                    "127.0.0.1:0",
                    Factory::for_protocol(move || {
                        let e = e.clone();
                        let mut p = Rec::new(Rc::default());
                        p.on_made = Some(Box::new(move |t| {
                            // A pull producer: writes the next piece each time the buffer empties.
                            struct Pull { t: Transport, sent: Cell<usize>, seed: Cell<u64>, sum: Rc<Cell<u64>>, vectored: bool }
                            impl Producer for Pull {
                                fn resume_producing(&self) {
                                    let mut seed = self.seed.get();
                                    let mut sent = self.sent.get();
                                    if sent >= TOTAL {
                                        self.t.unregister_producer();
                                        self.t.lose_connection();
                                        return;
                                    }
                                    let n = (1 + xorshift(&mut seed) % 300_000) as usize;
                                    let n = n.min(TOTAL - sent);
                                    let piece: Vec<u8> = (0..n).map(|i| (sent + i) as u8 ^ (seed as u8)).collect();
                                    let mut h = self.sum.get();
                                    fnv(&mut h, &piece);
                                    self.sum.set(h);
                                    if self.vectored {
                                        let (a, b) = piece.split_at(n / 3);
                                        let (b, c) = b.split_at(b.len() / 2);
                                        self.t.write_sequence(&[a, b, c]);
                                    } else {
                                        self.t.write(&piece);
                                    }
                                    sent += n;
                                    self.sent.set(sent);
                                    self.seed.set(seed);
                                }
                            }
                            let pull = Rc::new(Pull { t: t.clone(), sent: Cell::new(0), seed: Cell::new(42), sum: e.clone(), vectored });
                            t.register_producer(pull, false).unwrap();
                        }));
                        p
                    }),
                )
                .unwrap();
            let addr = port.address().as_tcp().unwrap();
            // The receiver: a plain socket with a small receive buffer, random read sizes.
            let reader = std::thread::spawn(move || {
                let sock = socket_with_small_rcvbuf(addr);
                let mut sock = sock;
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                let mut total = 0usize;
                let mut seed = 7u64;
                let mut buf = vec![0u8; 70_000];
                loop {
                    let want = 1 + (xorshift(&mut seed) % 70_000) as usize;
                    let n = sock.read(&mut buf[..want]).unwrap();
                    if n == 0 {
                        break;
                    }
                    fnv(&mut h, &buf[..n]);
                    total += n;
                }
                (total, h)
            });
            let done = Rc::new(Cell::new(false));
            let start = Instant::now();
            while !reader.is_finished() {
                assert!(start.elapsed() < secs(240), "64 MiB transfer too slow");
                reactor.iterate(Some(Duration::from_millis(20))).unwrap();
            }
            let (total, sum) = reader.join().unwrap();
            done.set(true);
            // Let the server see the close.
            for _ in 0..5 {
                reactor.iterate(Some(Duration::from_millis(10))).unwrap();
            }
            assert_eq!(total, TOTAL);
            assert_eq!(sum, expected.get(), "checksums differ (vectored: {vectored})");
            port.stop_listening();
        }
    }

    fn chat_broadcast_among_fifty_clients(reactor) {
        type Clients = RefCell<Vec<Transport>>;
        struct Chat { clients: Rc<Clients> }
        impl Protocol for Chat {
            fn connection_made(&mut self, cx: &mut Context<'_>) {
                let t = cx.transport();
                self.clients.borrow_mut().push(t.clone());
            }
            fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
                let t = cx.transport();
                for c in self.clients.borrow().iter().filter(|c| *c != t) {
                    c.write(data);
                }
            }
            fn connection_lost(&mut self, _cx: &mut Context<'_>, _: Reason) {
                self.clients.borrow_mut().retain(Transport::connected);
            }
        }
        let factory = Factory::with_state(Clients::default(), |c, _| Chat { clients: c.clone() });
        let clients = factory.state().clone();
        let port = reactor.listen_tcp("127.0.0.1:0", factory).unwrap();
        const N: usize = 50;
        let logs: Vec<Rc<Log>> = (0..N).map(|_| Rc::default()).collect();
        let transports: Rc<RefCell<Vec<Transport>>> = Rc::default();
        for log in &logs {
            let (l, ts) = (log.clone(), transports.clone());
            let f = Factory::for_protocol(move || {
                let mut p = Rec::new(l.clone());
                let ts = ts.clone();
                p.on_made = Some(Box::new(move |t| ts.borrow_mut().push(t.clone())));
                p
            });
            reactor.connect_tcp("127.0.0.1", port.port(), f, secs(5));
        }
        run_until(reactor, secs(20), || clients.borrow().len() == N && transports.borrow().len() == N);
        for (i, t) in transports.borrow().iter().enumerate() {
            t.write(format!("{i:02}\n").as_bytes());
        }
        run_until(reactor, secs(20), || logs.iter().all(|l| l.data.borrow().len() == 3 * (N - 1)));
        for log in &logs {
            let text = String::from_utf8(log.data.borrow().clone()).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort();
            lines.dedup();
            assert_eq!(lines.len(), N - 1);
        }
        for t in transports.borrow().iter() {
            t.lose_connection();
        }
        run_until(reactor, secs(20), || logs.iter().all(|l| l.lost.get() == 1) && clients.borrow().is_empty());
        transports.borrow_mut().clear();
        port.stop_listening();
    }

    fn close_calls_from_data_received_end_in_exactly_one_connection_lost(reactor) {
        // Each case: what the server does in data_received, and the reason it must see.
        type Action = fn(&Transport);
        let cases: [(&str, Action, &str); 4] = [
            ("lose", |t| t.lose_connection(), "ConnectionDone"),
            ("abort twice", |t| { t.abort_connection(); t.abort_connection(); }, "ConnectionAborted"),
            ("abort then lose", |t| { t.abort_connection(); t.lose_connection(); t.write(b"dropped"); }, "ConnectionAborted"),
            ("write after lose", |t| { t.write(b"before "); t.lose_connection(); t.write(b"after"); }, "ConnectionDone"),
        ];
        for (name, action, want) in cases {
            let log = Rc::new(Log::default());
            let l = log.clone();
            let port = reactor
                .listen_tcp("127.0.0.1:0", Factory::for_protocol(move || {
                    let mut p = Rec::new(l.clone());
                    p.on_data = Some(Box::new(move |t, _| action(t)));
                    p
                }))
                .unwrap();
            let mut client = TcpStream::connect(port.address()).unwrap();
            client.write_all(b"go").unwrap();
            run_until(reactor, secs(10), || log.lost.get() == 1);
            // Give a nested or second connection_lost a chance to show up.
            for _ in 0..3 {
                reactor.iterate(Some(Duration::from_millis(5))).unwrap();
            }
            assert_eq!(log.lost.get(), 1, "{name}");
            assert_eq!(log.events.borrow().last().unwrap(), &format!("lost:{want}"), "{name}");
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got);
            if name == "write after lose" {
                // As Twisted: writes accepted until the connection is actually closed.
                assert_eq!(got, b"before after", "{name}");
            } else if name != "lose" {
                assert!(got.is_empty(), "{name}: {got:?}");
            }
            port.stop_listening();
        }
    }

    fn stop_from_data_received(reactor) {
        let port = reactor
            .listen_tcp("127.0.0.1:0", Factory::for_protocol(|| {
                let mut p = Rec::new(Rc::default());
                p.stop_on_data = true;
                p
            }))
            .unwrap();
        let mut client = TcpStream::connect(port.address()).unwrap();
        client.write_all(b"stop").unwrap();
        let r = reactor.clone();
        reactor.call_when_running(move |_| drop(r));
        reactor.run().unwrap();
        // Shutdown disconnected the connection and the port.
        assert_eq!(reactor.descriptor_count(), 0);
        drop(port);
    }

    fn refused_connect_reports_connection_refused(reactor) {
        let f = Rc::new(Recorder::default());
        reactor.connect_tcp("127.0.0.1", free_port(), f.clone(), secs(5));
        run_until(reactor, secs(10), || f.calls.borrow().len() == 2);
        assert_eq!(*f.calls.borrow(), ["started", "failed:Refused"]);
        assert!(f.log.events.borrow().is_empty());
    }

    fn connect_timeout_reports_timed_out(reactor) {
        // A listener whose accept queue is full never completes new handshakes.
        let sock = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let fillers = fill_accept_queue(&sock);
        let f = Rc::new(Recorder::default());
        let start = Instant::now();
        reactor.connect_tcp("127.0.0.1", addr.port(), f.clone(), Duration::from_millis(300));
        run_until(reactor, secs(10), || f.calls.borrow().len() == 2);
        assert_eq!(*f.calls.borrow(), ["started", "failed:TimedOut(TimedOut { after: 300ms })"], "after {:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_millis(300));
        drop(fillers);
    }

    fn cancelled_connect_gets_one_failure_and_nothing_after(reactor) {
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo)).unwrap();
        for delay_iterations in [0, 1] {
            let f = Rc::new(Recorder::default());
            let c = reactor.connect_tcp("127.0.0.1", port.port(), f.clone(), secs(5));
            for _ in 0..delay_iterations {
                reactor.iterate(Some(Duration::ZERO)).unwrap();
            }
            if c.connecting() {
                c.stop_connecting();
                c.stop_connecting();
                for _ in 0..10 {
                    reactor.iterate(Some(Duration::from_millis(5))).unwrap();
                }
                assert_eq!(*f.calls.borrow(), ["started", "failed:Cancelled"]);
                assert!(f.log.events.borrow().is_empty());
            } else {
                c.disconnect();
                run_until(reactor, secs(5), || f.calls.borrow().len() == 2);
            }
        }
        settle(reactor, 1);
        port.stop_listening();
    }

    fn host_names_resolve_off_the_reactor_thread(reactor) {
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo)).unwrap();
        let f = Rc::new(Recorder::default());
        let c = reactor.connect_tcp("localhost", port.port(), f.clone(), secs(5));
        run_until(reactor, secs(10), || f.log.events.borrow().len() == 1 || f.calls.borrow().len() == 2);
        assert_eq!(*f.log.events.borrow(), ["made"], "{:?}", f.calls.borrow());
        c.disconnect();
        run_until(reactor, secs(10), || f.calls.borrow().len() == 2);
        assert_eq!(f.calls.borrow()[1], "lost:ConnectionDone");
        let bad = Rc::new(Recorder::default());
        reactor.connect_tcp("no-such-host.invalid", 1, bad.clone(), secs(5));
        run_until(reactor, secs(10), || bad.calls.borrow().len() == 2);
        assert!(bad.calls.borrow()[1].starts_with("failed:HostNotFound"), "{:?}", bad.calls.borrow());
        port.stop_listening();
    }

    fn backpressure_pauses_and_resumes_a_streaming_producer(reactor) {
        struct Push { t: Transport, paused: Cell<bool>, pauses: Cell<u32>, resumes: Cell<u32>, max_buffered: Cell<usize>, written: Cell<usize> }
        impl Push {
            fn pump(&self) {
                while !self.paused.get() && self.written.get() < 8 << 20 {
                    self.t.write(&[7u8; 16 * 1024]);
                    self.written.set(self.written.get() + 16 * 1024);
                    self.max_buffered.set(self.max_buffered.get().max(self.t.buffered()));
                }
                if self.written.get() >= 8 << 20 {
                    self.t.unregister_producer();
                    self.t.lose_connection();
                }
            }
        }
        impl Producer for Push {
            fn pause_producing(&self) { self.paused.set(true); self.pauses.set(self.pauses.get() + 1); }
            fn resume_producing(&self) { self.paused.set(false); self.resumes.set(self.resumes.get() + 1); self.pump(); }
        }
        let producer: Rc<RefCell<Option<Rc<Push>>>> = Rc::default();
        let p2 = producer.clone();
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(move || {
            let p2 = p2.clone();
            let mut p = Rec::new(Rc::default());
            p.on_made = Some(Box::new(move |t| {
                let push = Rc::new(Push { t: t.clone(), paused: Cell::new(false), pauses: Cell::new(0), resumes: Cell::new(0), max_buffered: Cell::new(0), written: Cell::new(0) });
                t.register_producer(push.clone(), true).unwrap();
                *p2.borrow_mut() = Some(push.clone());
                push.pump();
            }));
            p
        })).unwrap();
        let mut client = socket_with_small_rcvbuf(port.address().as_tcp().unwrap());
        // The peer does not read: the producer must be paused with a bounded buffer.
        run_until(reactor, secs(10), || producer.borrow().as_ref().is_some_and(|p| p.pauses.get() == 1));
        for _ in 0..20 {
            reactor.iterate(Some(Duration::from_millis(2))).unwrap();
        }
        let push = producer.borrow().clone().unwrap();
        assert!(push.paused.get());
        assert!(push.max_buffered.get() <= torsion::tcp::DEFAULT_HIGH_WATER + 16 * 1024, "{}", push.max_buffered.get());
        assert!(push.written.get() < 8 << 20);
        // Now drain: it is resumed and finishes.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got.len()
        });
        while !reader.is_finished() {
            reactor.iterate(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(reader.join().unwrap(), 8 << 20);
        assert!(push.resumes.get() >= 1);
        for _ in 0..3 {
            reactor.iterate(Some(Duration::from_millis(5))).unwrap();
        }
        producer.borrow_mut().take();
        port.stop_listening();
    }

    fn ten_thousand_connect_close_cycles_leave_nothing_behind(reactor) {
        // Server: closes first on "s", aborts on "r", otherwise echoes and waits for the client.
        struct Mixed;
        impl Protocol for Mixed {
            fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
                let t = cx.transport();
                match data.first() {
                    Some(b's') => t.lose_connection(),
                    Some(b'r') => t.abort_connection(),
                    _ => t.write(data),
                }
            }
        }
        let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Mixed)).unwrap();
        let addr = port.address().as_tcp().unwrap();
        let cycles = if cfg!(debug_assertions) { 3_000 } else { 10_000 };
        let client = std::thread::spawn(move || {
            for i in 0..cycles {
                let mut s = TcpStream::connect(addr).unwrap();
                match i % 3 {
                    0 => { s.write_all(b"c").unwrap(); let mut b = [0u8; 1]; s.read_exact(&mut b).unwrap(); }
                    1 => { s.write_all(b"s").unwrap(); let mut v = Vec::new(); let _ = s.read_to_end(&mut v); }
                    _ => { s.write_all(b"r").unwrap(); let mut v = Vec::new(); let _ = s.read_to_end(&mut v); }
                }
            }
        });
        while !client.is_finished() {
            reactor.iterate(Some(Duration::from_millis(10))).unwrap();
        }
        client.join().unwrap();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 1);
        assert_eq!(port.accepted(), cycles);
        port.stop_listening();
    }
}

/// A client socket with a small receive buffer (so the server's buffer fills quickly).
fn socket_with_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    // std has no SO_RCVBUF setter: connect through a torsion-free path and rely on the kernel
    // shrinking the window when the reader does not read. 128 KiB is the usual default ceiling.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Opens connections until the listener's accept queue is full (the next handshake then stalls).
fn fill_accept_queue(l: &TcpListener) -> Vec<TcpStream> {
    let addr = l.local_addr().unwrap();
    let mut v = Vec::new();
    for _ in 0..2048 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => v.push(s),
            Err(_) => break,
        }
    }
    v
}
