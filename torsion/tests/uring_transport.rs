//! The hard cases of a completion-based stream transport, forced through the public API: exact
//! bytes under a provided-buffer ring that runs dry (ENOBUFS), over one connection and fifty,
//! and over two hundred short connections whose descriptor numbers are reused mid-flight;
//! reading paused and resumed (after every delivery, for a long stretch under a flood, one
//! connection held paused while others share the ring, a proxy's end-to-end backpressure);
//! closes and aborts while a send is in flight (from outside and from inside `data_received`)
//! and a peer that vanishes mid-send; the reactor stopped or dropped mid-transfer; half-close;
//! a panicking protocol among healthy ones; and the io_uring statistics (ignored until the
//! completion transport lands).
//!
//! Every test runs on every backend (select, poll, epoll, io_uring) and, on io_uring, once more
//! with each of three tiny provided-buffer rings (1 x 16 B, 2 x 64 B, 4 x 4 KiB), configured
//! before the reactor is made; each run ends with the leak check. The readiness backends ignore
//! the ring: there the tests pin down the behaviour the completion transport must keep.
//!
//! Every stream carries a counter pattern unique to it ([`stream`]), checked as it arrives, so a
//! byte lost, duplicated, reordered or delivered to the wrong connection is reported with its
//! offset. Checks made inside protocol callbacks are recorded in the end's [`Log`] (a panic there
//! would only close the connection) and asserted by the test afterwards.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion::poller;
use torsion::testing::{run_until, LeakCheck};
use torsion::{
    Address, Backend, ClientFactory, ConnectError, Connector, Context, Factory, HalfClose,
    ListeningPort, Producer, Protocol, ProtocolFactory, Reactor, Reason, Transport,
};

// ------------------------------------------------------------------------------ the harness

/// How one run of a test is set up.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    /// The io_uring provided-buffer ring (`count`, `size`), `None` for the default.
    ring: Option<(u16, u32)>,
}

impl Cfg {
    /// `n` bytes of traffic, cut down where a tiny ring makes every few bytes cost a completion
    /// (a 16-byte ring gets a sixteenth, a 128-byte one a quarter), so that the file stays fast
    /// on the completion transport too.
    fn volume(&self, n: usize) -> usize {
        match self.ring {
            Some((count, size)) if u32::from(count) * size < 64 => n / 16,
            Some((count, size)) if u32::from(count) * size < 1024 => n / 4,
            _ => n,
        }
    }

    /// Bytes the provided-buffer ring holds, when it was configured.
    fn ring_bytes(&self) -> Option<usize> {
        self.ring.map(|(c, s)| usize::from(c) * s as usize)
    }
}

/// Puts the default provided-buffer ring back, however the test ends.
struct RingReset;

impl Drop for RingReset {
    fn drop(&mut self) {
        poller::set_io_uring_buffer_ring(None);
    }
}

/// The backend a run asks for: io_uring where the kernel has it, else epoll (as the default
/// choice would).
fn backend_or_fallback(backend: Backend) -> Backend {
    if backend == Backend::IoUring && !Backend::IoUring.available() {
        eprintln!("io_uring is unavailable: running on epoll");
        return Backend::Epoll;
    }
    backend
}

/// Runs `body` on a fresh reactor of `backend` made after the ring is configured, serialised
/// with the other descriptor-counting tests, then checks for leaks.
fn run_case(backend: Backend, ring: Option<(u16, u32)>, body: impl FnOnce(&Reactor, Cfg)) {
    let _serial = torsion::testing::serial();
    let backend = backend_or_fallback(backend);
    let _reset = RingReset;
    poller::set_io_uring_buffer_ring(ring);
    let leaks = LeakCheck::new();
    let reactor = Reactor::with_backend(backend).expect("reactor");
    body(&reactor, Cfg { ring });
    leaks.check(reactor);
}

/// As [`run_case`] for a body that consumes (drops) its reactor: the leak check then runs on a
/// fresh reactor, which must find the descriptor count back at the baseline.
fn run_owned(backend: Backend, ring: Option<(u16, u32)>, body: impl FnOnce(Reactor, Cfg)) {
    let _serial = torsion::testing::serial();
    let backend = backend_or_fallback(backend);
    let _reset = RingReset;
    poller::set_io_uring_buffer_ring(ring);
    let leaks = LeakCheck::new();
    let reactor = Reactor::with_backend(backend).expect("reactor");
    body(reactor, Cfg { ring });
    leaks.check(Reactor::with_backend(backend).expect("reactor"));
}

/// Makes a module of tests named after the body `$name`: one test per backend, plus io_uring
/// with each tiny ring; `$runner` is [`run_case`] or [`run_owned`].
macro_rules! on_every_backend {
    ($runner:ident: $name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn select() {
                $runner(Backend::Select, None, super::$name)
            }

            #[test]
            fn poll() {
                $runner(Backend::Poll, None, super::$name)
            }

            #[test]
            fn epoll() {
                $runner(Backend::Epoll, None, super::$name)
            }

            #[test]
            fn io_uring() {
                $runner(Backend::IoUring, None, super::$name)
            }

            #[test]
            fn io_uring_ring_1x16() {
                $runner(Backend::IoUring, Some((1, 16)), super::$name)
            }

            #[test]
            fn io_uring_ring_2x64() {
                $runner(Backend::IoUring, Some((2, 64)), super::$name)
            }

            #[test]
            fn io_uring_ring_4x4096() {
                $runner(Backend::IoUring, Some((4, 4096)), super::$name)
            }
        }
    };
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The wall-clock bound of every wait: failure, never pacing.
const LIMIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------ the streams

/// Stream `id`'s first `len` bytes: little-endian 32-bit words `id << 24 | n` for n = 0, 1, 2...
/// No word repeats, within a stream or across streams, so a byte lost, duplicated, reordered
/// or taken from another connection shows as a difference at (or a few bytes after) the offset
/// where it happened.
fn stream(id: u32, len: usize) -> Rc<[u8]> {
    assert!(id < 256 && len / 4 < 1 << 24, "stream {id} of {len} bytes");
    let mut v = Vec::with_capacity(len + 4);
    for n in 0..len.div_ceil(4) as u32 {
        v.extend_from_slice(&((id << 24) | n).to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

/// Write sizes, cycled: single bytes up to 100 KiB and one of 1 MiB, odd sizes, sizes around the
/// tiny rings' buffer sizes.
const CHUNKS: &[usize] = &[
    1,
    100 << 10,
    3,
    1460,
    16,
    17,
    64 << 10,
    4095,
    7,
    (32 << 10) + 1,
    255,
    8192,
    2,
    100_000,
    63,
    4097,
    65,
    1 << 20,
];

/// Writes `piece` through one of the three write calls, chosen by `turn` (with empty writes
/// and empty parts now and then, which must change nothing).
fn write_varied(t: &Transport, piece: &[u8], turn: usize) {
    match turn % 3 {
        0 => {
            if turn.is_multiple_of(4) {
                t.write(&[]);
            }
            t.write(piece);
        }
        1 => {
            let (a, b) = piece.split_at(piece.len() / 2);
            let (b, c) = b.split_at(b.len() / 2);
            t.write_sequence(&[a, b, c]);
        }
        _ => t.write_shared(Rc::from(piece)),
    }
}

// ------------------------------------------------------------------------------ the log

/// What one end of a connection saw. Protocol callbacks record here; the test asserts.
struct Log {
    name: String,
    /// What this end must receive, exactly (`None`: not checked).
    want: Option<Rc<[u8]>>,
    got: Cell<usize>,
    calls: Cell<usize>,
    transport: RefCell<Option<Transport>>,
    lost: RefCell<Vec<Reason>>,
    events: RefCell<Vec<&'static str>>,
    errors: RefCell<Vec<String>>,
    /// Set by the test while it holds this end's reading paused: data then is an error.
    paused: Cell<bool>,
    /// The protocol was dropped (the transport let go of it).
    dropped: Cell<bool>,
}

impl Log {
    fn new(name: impl Into<String>, want: Option<Rc<[u8]>>) -> Rc<Log> {
        Rc::new(Log {
            name: name.into(),
            want,
            got: Cell::new(0),
            calls: Cell::new(0),
            transport: RefCell::new(None),
            lost: RefCell::new(Vec::new()),
            events: RefCell::new(Vec::new()),
            errors: RefCell::new(Vec::new()),
            paused: Cell::new(false),
            dropped: Cell::new(false),
        })
    }

    fn error(&self, e: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < 8 {
            errors.push(e);
        }
    }

    fn failed(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    fn made(&self, t: &Transport) {
        if self.transport.borrow().is_some() {
            self.error("connection_made twice".into());
        }
        *self.transport.borrow_mut() = Some(t.clone());
        self.events.borrow_mut().push("made");
    }

    /// Checks `data` against what this end must receive next.
    fn data(&self, data: &[u8]) {
        if self.transport.borrow().is_none() {
            self.error("data_received before connection_made".into());
        }
        if !self.lost.borrow().is_empty() {
            self.error("data_received after connection_lost".into());
        }
        if self.paused.get() {
            self.error(format!(
                "data_received while reading was paused ({} bytes at offset {})",
                data.len(),
                self.got.get()
            ));
        }
        if data.is_empty() {
            self.error("an empty data_received".into());
        }
        self.calls.set(self.calls.get() + 1);
        let at = self.got.get();
        self.got.set(at + data.len());
        let Some(want) = &self.want else { return };
        if self.failed() {
            return;
        }
        let end = at + data.len();
        if end > want.len() {
            self.error(format!(
                "{} bytes received past the end of the {}-byte stream",
                end - want.len(),
                want.len()
            ));
        } else if data != &want[at..end] {
            let i = data
                .iter()
                .zip(&want[at..end])
                .position(|(a, b)| a != b)
                .expect("the slices differ");
            self.error(format!(
                "byte {} is {:#04x}, expected {:#04x} (chunk of {} at {at})",
                at + i,
                data[i],
                want[at + i],
                data.len()
            ));
        }
    }

    fn complete(&self) -> bool {
        self.want
            .as_ref()
            .is_some_and(|w| self.got.get() == w.len())
    }

    fn is_lost(&self) -> bool {
        !self.lost.borrow().is_empty()
    }

    fn transport(&self) -> Transport {
        self.transport
            .borrow()
            .clone()
            .unwrap_or_else(|| panic!("{}: not connected", self.name))
    }

    /// The reason of the one `connection_lost`.
    ///
    /// # Panics
    /// When there was none, or more than one.
    fn reason(&self) -> Reason {
        let lost = self.lost.borrow();
        assert_eq!(
            lost.len(),
            1,
            "{}: connection_lost delivered {} times: {lost:?}",
            self.name,
            lost.len()
        );
        lost[0].clone()
    }

    /// Asserts that no check failed.
    fn assert_ok(&self) {
        let errors = self.errors.borrow();
        assert!(errors.is_empty(), "{}: {errors:#?}", self.name);
    }

    /// Asserts a complete, exact stream and a clean end.
    fn assert_complete_and_clean(&self) {
        self.assert_ok();
        let want = self.want.as_ref().map_or(0, |w| w.len());
        assert_eq!(self.got.get(), want, "{}: bytes received", self.name);
        let reason = self.reason();
        assert!(
            reason.is_clean(),
            "{}: ended with {reason:?}, not cleanly",
            self.name
        );
    }
}

type Logs = Rc<RefCell<Vec<Rc<Log>>>>;

fn any_failed(logs: &[Rc<Log>]) -> bool {
    logs.iter().any(|l| l.failed())
}

fn assert_all_ok(logs: &[Rc<Log>]) {
    for l in logs {
        l.assert_ok();
    }
}

/// Iterates until `done`, or until a log records a failure (asserted at once).
fn wait(reactor: &Reactor, logs: &[&Logs], mut done: impl FnMut() -> bool) {
    run_until(reactor, LIMIT, || {
        done() || logs.iter().any(|l| any_failed(&l.borrow()))
    });
    for l in logs {
        assert_all_ok(&l.borrow());
    }
}

/// Waits for every connection to be gone (only the listener left), then stops listening.
fn finish(reactor: &Reactor, port: ListeningPort) {
    finish_all(reactor, &[port]);
}

/// [`finish`] for several listeners.
fn finish_all(reactor: &Reactor, ports: &[ListeningPort]) {
    run_until(reactor, LIMIT, || reactor.descriptor_count() == ports.len());
    for port in ports {
        port.stop_listening();
    }
}

// ------------------------------------------------------------------------------ the protocol

type Hook = Box<dyn FnMut(&mut Context<'_>, &Log)>;
type DataHook = Box<dyn FnMut(&mut Context<'_>, &Log, &[u8])>;

/// A protocol of hooks that records into its [`Log`] (checking what it receives, and that no
/// callback runs inside another) first.
struct Proto {
    log: Rc<Log>,
    in_callback: Rc<Cell<bool>>,
    made: Option<Hook>,
    data: Option<DataHook>,
    /// Set: the protocol keeps writing after the peer's FIN and runs this.
    read_closed: Option<Hook>,
    lost: Option<Hook>,
}

fn proto(log: &Rc<Log>) -> Proto {
    Proto {
        log: log.clone(),
        in_callback: Rc::default(),
        made: None,
        data: None,
        read_closed: None,
        lost: None,
    }
}

impl Proto {
    fn on_made(mut self, h: impl FnMut(&mut Context<'_>, &Log) + 'static) -> Proto {
        self.made = Some(Box::new(h));
        self
    }

    fn on_data(mut self, h: impl FnMut(&mut Context<'_>, &Log, &[u8]) + 'static) -> Proto {
        self.data = Some(Box::new(h));
        self
    }

    fn on_lost(mut self, h: impl FnMut(&mut Context<'_>, &Log) + 'static) -> Proto {
        self.lost = Some(Box::new(h));
        self
    }

    fn on_read_closed(mut self, h: impl FnMut(&mut Context<'_>, &Log) + 'static) -> Proto {
        self.read_closed = Some(Box::new(h));
        self
    }
}

/// Marks a protocol callback as running; a second one inside it is recorded as an error.
struct Inside(Rc<Cell<bool>>);

impl Inside {
    fn enter(p: &Proto, what: &str) -> Inside {
        if p.in_callback.replace(true) {
            p.log
                .error(format!("{what} called inside another callback"));
        }
        Inside(p.in_callback.clone())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Protocol for Proto {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let _inside = Inside::enter(self, "connection_made");
        self.log.made(cx.transport());
        if let Some(h) = &mut self.made {
            h(cx, &self.log);
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let _inside = Inside::enter(self, "data_received");
        self.log.data(data);
        if let Some(h) = &mut self.data {
            h(cx, &self.log, data);
        }
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        let _inside = Inside::enter(self, "read_connection_lost");
        self.log.events.borrow_mut().push("read_closed");
        match &mut self.read_closed {
            Some(h) => {
                h(cx, &self.log);
                HalfClose::KeepWriting
            }
            None => HalfClose::Close,
        }
    }

    fn write_connection_lost(&mut self, _: &mut Context<'_>) {
        let _inside = Inside::enter(self, "write_connection_lost");
        self.log.events.borrow_mut().push("write_closed");
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        let _inside = Inside::enter(self, "connection_lost");
        if cx.transport().connected() {
            self.log
                .error("the transport says connected in connection_lost".into());
        }
        self.log.events.borrow_mut().push("lost");
        self.log.lost.borrow_mut().push(reason);
        if let Some(h) = &mut self.lost {
            h(cx, &self.log);
        }
    }
}

impl Drop for Proto {
    fn drop(&mut self) {
        self.log.dropped.set(true);
    }
}

/// Hands out one protocol, once; a failed attempt is recorded in its log.
struct Once {
    p: RefCell<Option<Box<dyn Protocol>>>,
    log: Rc<Log>,
}

impl ProtocolFactory for Once {
    fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
        self.p.borrow_mut().take()
    }
}

impl ClientFactory for Once {
    fn client_connection_failed(&self, _: &Connector, reason: ConnectError) {
        self.log.error(format!("connection failed: {reason:?}"));
    }
}

/// Listens on loopback; `make(i)` builds the `i`th accepted connection's log and protocol.
fn serve(
    reactor: &Reactor,
    make: impl Fn(usize) -> (Rc<Log>, Proto) + 'static,
) -> (ListeningPort, Logs) {
    let logs: Logs = Rc::default();
    let l = logs.clone();
    let factory = Factory::for_protocol(move || {
        let i = l.borrow().len();
        let (log, p) = make(i);
        l.borrow_mut().push(log);
        p
    });
    let port = reactor.listen_tcp("127.0.0.1:0", factory).unwrap();
    (port, logs)
}

/// Connects to `port` with protocol `p` (whose log is `log`).
fn connect(reactor: &Reactor, port: &ListeningPort, log: &Rc<Log>, p: Proto) {
    let once = Rc::new(Once {
        p: RefCell::new(Some(Box::new(p))),
        log: log.clone(),
    });
    reactor.connect_tcp("127.0.0.1", port.port(), once, secs(30));
}

/// A client named `name` expecting `want` back, which writes `data` through a [`Source`] and
/// then does what `then` says; with its log list for `wait`.
fn writer(
    reactor: &Reactor,
    port: &ListeningPort,
    name: &str,
    want: Rc<[u8]>,
    data: Rc<[u8]>,
    then: Then,
) -> (Rc<Log>, Logs) {
    let client = Log::new(name, Some(want));
    let p = proto(&client).on_made(move |cx, _| {
        Source::start(cx.reactor(), cx.transport(), data.clone(), then);
    });
    connect(reactor, port, &client, p);
    let logs: Logs = Rc::new(RefCell::new(vec![client.clone()]));
    (client, logs)
}

/// A server that echoes everything, alternating `write` and `write_shared`.
fn echo_server(reactor: &Reactor) -> (ListeningPort, Logs) {
    serve(reactor, |i| {
        let log = Log::new(format!("echo server {i}"), None);
        let mut turn = 0usize;
        let p = proto(&log).on_data(move |cx, _, data| {
            turn += 1;
            if turn.is_multiple_of(2) {
                cx.transport().write(data);
            } else {
                cx.transport().write_shared(Rc::from(data));
            }
        });
        (log, p)
    })
}

/// A client that sends `out` in varied chunks and through the three write calls, keeping at
/// most `window` bytes not yet echoed back (so writes land while earlier sends are still in
/// flight), checks the echo, and closes once all of it came back.
fn echo_client(name: String, out: Rc<[u8]>, window: usize) -> (Rc<Log>, Proto) {
    let log = Log::new(name, Some(out.clone()));
    let sent = Rc::new(Cell::new(0usize));
    let turn = Rc::new(Cell::new(0usize));
    let pump = move |t: &Transport, log: &Log| {
        while sent.get() < out.len() && sent.get() - log.got.get() < window {
            let at = sent.get();
            let k = turn.get();
            turn.set(k + 1);
            let n = CHUNKS[k % CHUNKS.len()].min(out.len() - at);
            write_varied(t, &out[at..at + n], k);
            sent.set(at + n);
        }
    };
    let pump = Rc::new(pump);
    let p2 = pump.clone();
    let p = proto(&log)
        .on_made(move |cx, log| p2(cx.transport(), log))
        .on_data(move |cx, log, _| {
            pump(cx.transport(), log);
            if log.complete() {
                cx.transport().lose_connection();
            }
        });
    (log, p)
}

// ------------------------------------------------------------------------------ the producer

/// What a [`Source`] does once everything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    LoseConnection,
    LoseWriteConnection,
}

/// A streaming producer that writes `out` into a transport one varied chunk per reactor turn
/// (so writes keep arriving while sends are in flight), paused and resumed by the transport's
/// water marks, then unregisters and closes as `then` says.
struct Source {
    me: Weak<Source>,
    t: Transport,
    reactor: RefCell<Option<Reactor>>,
    out: Rc<[u8]>,
    then: Then,
    sent: Cell<usize>,
    turn: Cell<usize>,
    paused: Cell<bool>,
    scheduled: Cell<bool>,
    done: Cell<bool>,
    /// Times the transport paused it (its buffer passed the high-water mark).
    pauses: Cell<usize>,
}

impl Source {
    /// Registers a source on `t` and starts it.
    fn start(r: &Reactor, t: &Transport, out: Rc<[u8]>, then: Then) -> Rc<Source> {
        let s = Rc::new_cyclic(|me| Source {
            me: me.clone(),
            t: t.clone(),
            reactor: RefCell::new(Some(r.clone())),
            out,
            then,
            sent: Cell::new(0),
            turn: Cell::new(0),
            paused: Cell::new(false),
            scheduled: Cell::new(false),
            done: Cell::new(false),
            pauses: Cell::new(0),
        });
        t.register_producer(s.clone(), true).unwrap();
        s.schedule();
        s
    }

    fn schedule(&self) {
        if self.scheduled.get() || self.done.get() || self.paused.get() {
            return;
        }
        let Some(r) = self.reactor.borrow().clone() else {
            return;
        };
        self.scheduled.set(true);
        let me = self.me.clone();
        r.call_soon(move |_| {
            if let Some(me) = me.upgrade() {
                me.tick();
            }
        });
    }

    fn tick(&self) {
        self.scheduled.set(false);
        if self.done.get() || self.paused.get() {
            return;
        }
        let at = self.sent.get();
        let k = self.turn.get();
        self.turn.set(k + 1);
        let n = CHUNKS[k % CHUNKS.len()].min(self.out.len() - at);
        self.sent.set(at + n);
        write_varied(&self.t, &self.out[at..at + n], k);
        if self.sent.get() == self.out.len() {
            self.done.set(true);
            self.reactor.borrow_mut().take();
            self.t.unregister_producer();
            match self.then {
                Then::LoseConnection => self.t.lose_connection(),
                Then::LoseWriteConnection => self.t.lose_write_connection(),
            }
        } else {
            self.schedule();
        }
    }
}

impl Producer for Source {
    fn pause_producing(&self) {
        if !self.paused.get() {
            self.pauses.set(self.pauses.get() + 1);
        }
        self.paused.set(true);
    }

    fn resume_producing(&self) {
        self.paused.set(false);
        self.schedule();
    }

    fn stop_producing(&self) {
        self.done.set(true);
        self.reactor.borrow_mut().take();
    }
}

/// Reads from `c` until EOF or an error, checking against `want`; returns the count and how
/// the stream ended.
fn read_checked(c: &mut TcpStream, want: &[u8]) -> (usize, std::io::Result<()>) {
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(k) => {
                assert!(
                    got + k <= want.len(),
                    "{} bytes too many",
                    got + k - want.len()
                );
                if buf[..k] != want[got..got + k] {
                    let i = buf[..k]
                        .iter()
                        .zip(&want[got..])
                        .position(|(a, b)| a != b)
                        .unwrap();
                    panic!(
                        "byte {} is {:#04x}, expected {:#04x}",
                        got + i,
                        buf[i],
                        want[got + i]
                    );
                }
                got += k;
            }
            Err(e) => return (got, Err(e)),
        }
    }
}

/// Writes `out` to `c` in the varied chunk sizes (the first 4 KiB one byte per call), with
/// Nagle off so that the sizes reach the wire as separate segments.
fn write_chunked(c: &mut TcpStream, out: &[u8]) {
    c.set_nodelay(true).unwrap();
    let mut at = 0;
    while at < out.len().min(4096) {
        c.write_all(&out[at..at + 1]).unwrap();
        at += 1;
    }
    for &size in CHUNKS.iter().cycle() {
        if at == out.len() {
            break;
        }
        let n = size.min(out.len() - at);
        c.write_all(&out[at..at + n]).unwrap();
        at += n;
    }
}

// ------------------------------------------------------------------------------ 1. echo

fn echo_of_four_mib_over_one_connection_is_exact(reactor: &Reactor, cfg: Cfg) {
    let len = cfg.volume(4 << 20);
    let (port, servers) = echo_server(reactor);
    let (log, p) = echo_client("client".into(), stream(1, len), 512 << 10);
    connect(reactor, &port, &log, p);
    let clients: Logs = Rc::new(RefCell::new(vec![log.clone()]));
    wait(reactor, &[&servers, &clients], || {
        log.is_lost() && servers.borrow().iter().all(|s| s.is_lost())
    });
    log.assert_complete_and_clean();
    let servers = servers.borrow();
    assert_eq!(servers.len(), 1);
    servers[0].assert_complete_and_clean_end(len);
    assert!(
        log.dropped.get() && servers[0].dropped.get(),
        "a protocol was not released"
    );
    finish(reactor, port);
}

on_every_backend!(run_case: echo_of_four_mib_over_one_connection_is_exact);

fn echo_over_fifty_concurrent_connections_is_exact(reactor: &Reactor, cfg: Cfg) {
    const N: u32 = 50;
    let len = cfg.volume(96 << 10);
    let (port, servers) = echo_server(reactor);
    let clients: Logs = Rc::default();
    for i in 0..N {
        // Different lengths, so that the connections end at different times.
        let (log, p) = echo_client(
            format!("client {i}"),
            stream(i + 10, len + i as usize * 1031),
            128 << 10,
        );
        connect(reactor, &port, &log, p);
        clients.borrow_mut().push(log);
    }
    wait(reactor, &[&servers, &clients], || {
        clients.borrow().iter().all(|c| c.is_lost())
            && servers.borrow().len() == N as usize
            && servers.borrow().iter().all(|s| s.is_lost())
    });
    for c in clients.borrow().iter() {
        c.assert_complete_and_clean();
    }
    let total: usize = clients.borrow().iter().map(|c| c.got.get()).sum();
    let echoed: usize = servers.borrow().iter().map(|s| s.got.get()).sum();
    assert_eq!(
        total, echoed,
        "the servers received what the clients got back"
    );
    for s in servers.borrow().iter() {
        assert!(s.reason().is_clean(), "{}: {:?}", s.name, s.reason());
    }
    finish(reactor, port);
}

on_every_backend!(run_case: echo_over_fifty_concurrent_connections_is_exact);

fn echo_to_a_plain_socket_writing_single_bytes_to_100_kib_is_exact(reactor: &Reactor, cfg: Cfg) {
    let len = cfg.volume(2 << 20);
    let (port, servers) = echo_server(reactor);
    let addr = port.address().as_tcp().unwrap();
    let out = stream(2, len).to_vec();
    let peer = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let out2 = out.clone();
        let writer = std::thread::spawn(move || {
            write_chunked(&mut w, &out2);
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_checked(&mut c, &out);
        writer.join().unwrap();
        got
    });
    wait(reactor, &[&servers], || peer.is_finished());
    let (got, end) = peer.join().unwrap();
    end.expect("a clean end");
    assert_eq!(got, len, "the echo was cut");
    wait(reactor, &[&servers], || {
        servers.borrow().iter().all(|s| s.is_lost())
    });
    servers.borrow()[0].assert_complete_and_clean_end(len);
    finish(reactor, port);
}

on_every_backend!(run_case: echo_to_a_plain_socket_writing_single_bytes_to_100_kib_is_exact);

impl Log {
    /// For a log without an expected stream: `len` bytes in, and a clean end.
    fn assert_complete_and_clean_end(&self, len: usize) {
        self.assert_ok();
        assert_eq!(self.got.get(), len, "{}: bytes received", self.name);
        let reason = self.reason();
        assert!(reason.is_clean(), "{}: ended with {reason:?}", self.name);
    }
}

/// Starts echo clients one after another (each one's end starts the next), every other one
/// aborting a quarter of the way through, so that descriptor numbers are reused while the
/// previous owner's operations may still be completing.
struct Churn {
    port: u16,
    len: usize,
    total: usize,
    started: Cell<usize>,
    clients: Logs,
}

impl Churn {
    fn start_one(self: &Rc<Self>, r: &Reactor) {
        let i = self.started.get();
        if i == self.total {
            return;
        }
        self.started.set(i + 1);
        let id = 50 + i as u32; // unique per connection
        let (log, mut p) = echo_client(
            format!("churned client {i}"),
            stream(id, self.len),
            16 << 10,
        );
        if i % 2 == 1 {
            let mut inner = p.data.take().expect("the echo client has a data hook");
            let quarter = self.len / 4;
            p.data = Some(Box::new(move |cx, log, data| {
                inner(cx, log, data);
                if log.got.get() >= quarter && !log.paused.get() {
                    cx.transport().abort_connection();
                    log.paused.set(true); // nothing may be delivered after the abort
                }
            }));
        }
        let me = self.clone();
        p.lost = Some(Box::new(move |cx, _| me.start_one(cx.reactor())));
        self.clients.borrow_mut().push(log.clone());
        let once = Rc::new(Once {
            p: RefCell::new(Some(Box::new(p))),
            log,
        });
        r.connect_tcp("127.0.0.1", self.port, once, secs(30));
    }
}

fn churned_connections_never_see_each_others_bytes(reactor: &Reactor, cfg: Cfg) {
    const TOTAL: usize = 200;
    const LIVE: usize = 10;
    let (port, servers) = echo_server(reactor);
    let churn = Rc::new(Churn {
        port: port.port(),
        len: cfg.volume(64 << 10),
        total: TOTAL,
        started: Cell::new(0),
        clients: Rc::default(),
    });
    for _ in 0..LIVE {
        churn.start_one(reactor);
    }
    let clients = churn.clients.clone();
    wait(reactor, &[&servers, &clients], || {
        churn.started.get() == TOTAL
            && clients.borrow().iter().all(|c| c.is_lost())
            && servers.borrow().len() == TOTAL
            && servers.borrow().iter().all(|s| s.is_lost())
    });
    for (i, c) in clients.borrow().iter().enumerate() {
        c.assert_ok();
        if i % 2 == 0 {
            c.assert_complete_and_clean();
        } else {
            let reason = c.reason();
            assert!(
                matches!(reason, Reason::ConnectionAborted),
                "{}: {reason:?}",
                c.name
            );
        }
    }
    for s in servers.borrow().iter() {
        let reason = s.reason();
        assert!(
            matches!(reason, Reason::ConnectionDone | Reason::ConnectionLost(_)),
            "{}: {reason:?}",
            s.name
        );
    }
    finish(reactor, port);
}

on_every_backend!(run_case: churned_connections_never_see_each_others_bytes);

// ------------------------------------------------------------------------------ 2. pause

fn reading_paused_after_every_delivery_and_resumed_later_loses_nothing(
    reactor: &Reactor,
    cfg: Cfg,
) {
    // The server pauses its transport in every data_received and resumes it from a later
    // turn of the reactor (call_soon or call_later(0), now and then pausing or resuming
    // twice); the client writes through a streaming producer and closes once done. Every
    // byte must arrive, in order, none while paused, the FIN after the last.
    let len = cfg.volume(2 << 20);
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("paused server {i}"), Some(stream(3, len)));
        let mut turn = 0usize;
        let me = log.clone();
        let p = proto(&log).on_data(move |cx, _, _| {
            turn += 1;
            let t = cx.transport().clone();
            t.pause_producing();
            if turn.is_multiple_of(5) {
                t.pause_producing();
            }
            me.paused.set(true);
            let double = turn.is_multiple_of(7);
            let me = me.clone();
            let resume = move |_: &Reactor| {
                me.paused.set(false);
                t.resume_producing();
                if double {
                    t.resume_producing();
                }
            };
            if turn.is_multiple_of(2) {
                cx.reactor().call_soon(resume);
            } else {
                cx.reactor().call_later(Duration::ZERO, resume);
            }
        });
        (log, p)
    });
    let (client, clients) = writer(
        reactor,
        &port,
        "writer",
        stream(0, 0),
        stream(3, len),
        Then::LoseConnection,
    );
    wait(reactor, &[&servers, &clients], || {
        client.is_lost() && servers.borrow().first().is_some_and(|s| s.is_lost())
    });
    client.assert_complete_and_clean();
    let server = servers.borrow()[0].clone();
    server.assert_complete_and_clean();
    assert!(
        server.calls.get() >= 2,
        "one delivery only: nothing was paused"
    );
    finish(reactor, port);
}

on_every_backend!(run_case: reading_paused_after_every_delivery_and_resumed_later_loses_nothing);

fn a_long_pause_under_an_eight_mib_flood_reads_nothing_then_everything(
    reactor: &Reactor,
    cfg: Cfg,
) {
    // The server pauses in connection_made, before any byte; the client floods 8 MiB
    // through a streaming producer over small socket buffers. While paused the server must
    // not take the flood in (at most what the provided-buffer ring holds may be received,
    // none of it delivered): the client's buffer passes its high-water mark and its
    // producer is paused. Resumed, every byte arrives in order, then the FIN.
    let len = cfg.volume(8 << 20);
    let want = stream(4, len);
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("held server {i}"), Some(want.clone()));
        let p = proto(&log).on_made(|cx, log| {
            cx.transport().pause_producing();
            log.paused.set(true);
            cx.transport()
                .tcp()
                .unwrap()
                .set_receive_buffer_size(32 << 10)
                .unwrap();
        });
        (log, p)
    });
    let client = Log::new("flooder", Some(stream(0, 0)));
    let source: Rc<RefCell<Option<Rc<Source>>>> = Rc::default();
    let s2 = source.clone();
    let p = proto(&client).on_made(move |cx, _| {
        cx.transport()
            .tcp()
            .unwrap()
            .set_send_buffer_size(32 << 10)
            .unwrap();
        let s = Source::start(
            cx.reactor(),
            cx.transport(),
            stream(4, len),
            Then::LoseConnection,
        );
        *s2.borrow_mut() = Some(s);
    });
    connect(reactor, &port, &client, p);
    let clients: Logs = Rc::new(RefCell::new(vec![client.clone()]));
    let logs = [&servers, &clients];
    wait(reactor, &logs, || {
        servers
            .borrow()
            .first()
            .is_some_and(|s| s.transport.borrow().is_some())
    });
    let server = servers.borrow()[0].clone();
    let source = source.borrow().clone().unwrap();
    // Until the flood is held up (or, were the server reading, all written), then a few
    // more turns, then held up again (the kernel may have taken a little more).
    wait(reactor, &logs, || source.paused.get() || source.done.get());
    for _ in 0..10 {
        reactor.iterate(Some(Duration::from_millis(10))).unwrap();
    }
    wait(reactor, &logs, || source.paused.get() || source.done.get());
    server.assert_ok();
    assert_eq!(server.calls.get(), 0, "data delivered while paused");
    assert!(
        !source.done.get(),
        "the whole flood was taken in while paused"
    );
    // Everything the reactor received (the client receives nothing).
    let taken = reactor.stats().bytes_read;
    let bound = cfg.ring_bytes().unwrap_or(1 << 20) as u64 + (64 << 10);
    assert!(
        taken <= bound,
        "{taken} bytes received while reading was paused (bound {bound}); {} of {len} written",
        source.sent.get()
    );
    server.paused.set(false);
    server.transport().resume_producing();
    wait(reactor, &logs, || client.is_lost() && server.is_lost());
    server.assert_complete_and_clean();
    client.assert_complete_and_clean();
    assert!(source.done.get() && source.pauses.get() >= 1);
    finish(reactor, port);
}

on_every_backend!(run_case: a_long_pause_under_an_eight_mib_flood_reads_nothing_then_everything);

/// Pauses `t` until a later turn of the reactor (call_soon or call_later(0), by `turn`),
/// marking `log` paused meanwhile.
fn pause_a_turn(cx: &Context<'_>, log: &Rc<Log>, turn: usize) {
    let t = cx.transport().clone();
    t.pause_producing();
    log.paused.set(true);
    let log = log.clone();
    let resume = move |_: &Reactor| {
        log.paused.set(false);
        t.resume_producing();
    };
    if turn.is_multiple_of(2) {
        cx.reactor().call_soon(resume);
    } else {
        cx.reactor().call_later(Duration::ZERO, resume);
    }
}

fn a_connection_held_paused_does_not_starve_the_others(reactor: &Reactor, cfg: Cfg) {
    // One server connection takes a first delivery, then stays paused with its peer still
    // sending; meanwhile four echo pairs must run to completion (a paused connection may
    // not keep the shared buffer ring to itself). Resumed, it gets the rest, exact.
    // Not cut down for tiny rings: the first delivery must not be the whole stream.
    let held_len = 1 << 20;
    let (held_port, held) = serve(reactor, move |i| {
        let log = Log::new(format!("held server {i}"), Some(stream(40, held_len)));
        let me = log.clone();
        let p = proto(&log).on_data(move |cx, _, _| {
            if me.calls.get() == 1 {
                cx.transport().pause_producing();
                me.paused.set(true);
            }
        });
        (log, p)
    });
    let (writer, writers) = writer(
        reactor,
        &held_port,
        "held writer",
        stream(0, 0),
        stream(40, held_len),
        Then::LoseConnection,
    );
    wait(reactor, &[&held, &writers], || {
        held.borrow().first().is_some_and(|h| h.paused.get())
    });
    let (port, servers) = echo_server(reactor);
    let clients: Logs = Rc::default();
    for i in 0..4 {
        let (log, p) = echo_client(
            format!("client {i}"),
            stream(41 + i, cfg.volume(512 << 10)),
            64 << 10,
        );
        connect(reactor, &port, &log, p);
        clients.borrow_mut().push(log);
    }
    let logs = [&held, &writers, &servers, &clients];
    wait(reactor, &logs, || {
        clients.borrow().iter().all(|c| c.is_lost())
    });
    for c in clients.borrow().iter() {
        c.assert_complete_and_clean();
    }
    let h = held.borrow()[0].clone();
    assert_eq!(h.calls.get(), 1, "data delivered while paused");
    assert!(
        !h.complete(),
        "the held connection got everything in its first delivery"
    );
    h.paused.set(false);
    h.transport().resume_producing();
    wait(reactor, &logs, || h.is_lost() && writer.is_lost());
    h.assert_complete_and_clean();
    writer.assert_complete_and_clean();
    finish_all(reactor, &[port, held_port]);
}

on_every_backend!(run_case: a_connection_held_paused_does_not_starve_the_others);

fn a_paused_connection_whose_peer_resets_is_not_read_while_paused(reactor: &Reactor, cfg: Cfg) {
    // The server pauses before any byte; the client sends 64 KiB, then resets the
    // connection. Nothing may be delivered while paused (the connection may be reported lost
    // meanwhile, with an error); resumed, what is delivered is an exact prefix, and the end is
    // an error, never a clean close.
    let len = cfg.volume(64 << 10);
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("paused server {i}"), Some(stream(70, len)));
        let p = proto(&log).on_made(|cx, log| {
            cx.transport().pause_producing();
            log.paused.set(true);
        });
        (log, p)
    });
    let client = Log::new("resetting client", Some(stream(0, 0)));
    let p = proto(&client).on_made(move |cx, _| cx.transport().write(&stream(70, len)));
    connect(reactor, &port, &client, p);
    let clients: Logs = Rc::new(RefCell::new(vec![client.clone()]));
    let logs = [&servers, &clients];
    wait(reactor, &logs, || {
        client
            .transport
            .borrow()
            .as_ref()
            .is_some_and(|t| t.buffered() == 0)
            && servers
                .borrow()
                .first()
                .is_some_and(|s| s.transport.borrow().is_some())
    });
    client.transport().abort_connection();
    wait(reactor, &logs, || client.is_lost());
    for _ in 0..10 {
        reactor.iterate(Some(Duration::from_millis(10))).unwrap();
    }
    let server = servers.borrow()[0].clone();
    server.assert_ok();
    assert_eq!(server.calls.get(), 0, "data delivered while paused");
    if !server.is_lost() {
        server.paused.set(false);
        server.transport().resume_producing();
    }
    wait(reactor, &logs, || server.is_lost());
    server.assert_ok();
    let reason = server.reason();
    assert!(matches!(reason, Reason::ConnectionLost(_)), "{reason:?}");
    finish(reactor, port);
}

on_every_backend!(run_case: a_paused_connection_whose_peer_resets_is_not_read_while_paused);

/// Forwards the flow control of a transport used as a producer, and marks its log paused.
struct Splice {
    t: Transport,
    log: Rc<Log>,
    pauses: Rc<Cell<usize>>,
}

impl Producer for Splice {
    fn pause_producing(&self) {
        self.pauses.set(self.pauses.get() + 1);
        self.log.paused.set(true);
        self.t.pause_producing();
    }

    fn resume_producing(&self) {
        self.log.paused.set(false);
        self.t.resume_producing();
    }

    fn stop_producing(&self) {
        self.t.stop_producing();
    }
}

fn a_proxy_with_end_to_end_backpressure_carries_four_mib_exactly(reactor: &Reactor, cfg: Cfg) {
    // client -> proxy -> backend. The proxy's inbound connection is the streaming producer
    // of its outbound one; the backend reads one delivery per turn over a small window.
    // Every byte arrives exact, the inbound side is paused while the outbound buffer is
    // over its high-water mark (no data_received then), and that buffer stays bounded.
    let len = cfg.volume(4 << 20);
    let (backend, backends) = serve(reactor, move |i| {
        let log = Log::new(format!("backend {i}"), Some(stream(50, len)));
        let me = log.clone();
        let mut turn = 0;
        let p = proto(&log)
            .on_made(|cx, _| {
                cx.transport()
                    .tcp()
                    .unwrap()
                    // 64 KiB, not less: with a window under two loopback MSS (64 KiB each)
                    // and reads of a few KiB (a 4 KiB provided-buffer ring, the backend
                    // pausing after each delivery), Linux's receiver-side silly-window
                    // avoidance keeps the window at zero after each small read, and the
                    // transfer crawls on zero-window probes (about 30 s, nothing lost).
                    .set_receive_buffer_size(64 << 10)
                    .unwrap()
            })
            .on_data(move |cx, _, _| {
                turn += 1;
                pause_a_turn(cx, &me, turn);
            });
        (log, p)
    });
    let backend_port = backend.port();
    let pauses = Rc::new(Cell::new(0));
    let max_buffered = Rc::new(Cell::new(0));
    let outbound_logs: Logs = Rc::default();
    let (pz, mb, ol) = (pauses.clone(), max_buffered.clone(), outbound_logs.clone());
    let (proxy, inbound) = serve(reactor, move |i| {
        let log = Log::new(format!("proxy inbound {i}"), None);
        let out_log = Log::new(format!("proxy outbound {i}"), Some(stream(0, 0)));
        ol.borrow_mut().push(out_log.clone());
        let me = log.clone();
        let (pz, mb) = (pz.clone(), mb.clone());
        let out = out_log.clone();
        let p = proto(&log)
            .on_made(move |cx, _| {
                // Nothing is read until the backend is connected.
                let inbound = cx.transport().clone();
                inbound.pause_producing();
                let (me, pz) = (me.clone(), pz.clone());
                let outbound = proto(&out).on_made(move |cx, _| {
                    let t = cx.transport();
                    t.tcp().unwrap().set_send_buffer_size(16 << 10).unwrap();
                    let splice = Splice {
                        t: inbound.clone(),
                        log: me.clone(),
                        pauses: pz.clone(),
                    };
                    t.register_producer(Rc::new(splice), true).unwrap();
                    inbound.resume_producing();
                });
                let once = Rc::new(Once {
                    p: RefCell::new(Some(Box::new(outbound))),
                    log: out.clone(),
                });
                cx.reactor()
                    .connect_tcp("127.0.0.1", backend_port, once, secs(30));
            })
            .on_data({
                let out = out_log.clone();
                move |_, _, data| {
                    let t = out.transport();
                    t.write(data);
                    mb.set(mb.get().max(t.buffered()));
                }
            })
            .on_lost(move |_, _| {
                let t = out_log.transport();
                t.unregister_producer();
                t.lose_connection();
            });
        (log, p)
    });
    let (client, clients) = writer(
        reactor,
        &proxy,
        "client",
        stream(0, 0),
        stream(50, len),
        Then::LoseConnection,
    );
    let logs = [&backends, &inbound, &outbound_logs, &clients];
    wait(reactor, &logs, || {
        client.is_lost()
            && [&backends, &inbound, &outbound_logs]
                .iter()
                .all(|l| l.borrow().first().is_some_and(|l| l.is_lost()))
    });
    client.assert_complete_and_clean();
    backends.borrow()[0].assert_complete_and_clean();
    inbound.borrow()[0].assert_complete_and_clean_end(len);
    outbound_logs.borrow()[0].assert_complete_and_clean();
    eprintln!(
        "{}: inbound paused {} times; the proxy buffered {} bytes at most",
        reactor.poller_name(),
        pauses.get(),
        max_buffered.get()
    );
    // The high-water mark (64 KiB) plus one delivery, which a read of at most 256 KiB or a
    // provided buffer (at most 1 MiB) bounds.
    assert!(
        max_buffered.get() <= (64 << 10) + (1 << 20),
        "the proxy buffered {} bytes",
        max_buffered.get()
    );
    if cfg.ring.is_none() {
        assert!(
            pauses.get() > 0,
            "the inbound side was never paused: no backpressure"
        );
    }
    finish_all(reactor, &[proxy, backend]);
}

on_every_backend!(run_case: a_proxy_with_end_to_end_backpressure_carries_four_mib_exactly);

// ------------------------------------------------------------------------------ 3. closing

/// A server that writes `out` at once (small writes, then the bulk shared) over a small send
/// buffer, and a client that holds its reading paused from the start over a small receive
/// buffer: the server's send is pending until the test lets the client read.
fn pending_send(reactor: &Reactor, out: Rc<[u8]>) -> (ListeningPort, Logs, Logs) {
    let o = out.clone();
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("sending server {i}"), Some(stream(0, 0)));
        let out = o.clone();
        let p = proto(&log).on_made(move |cx, _| {
            let t = cx.transport();
            t.tcp().unwrap().set_send_buffer_size(32 << 10).unwrap();
            let mut at = 0;
            for (k, n) in [1, 3, 1000, 16, 4095].into_iter().enumerate() {
                write_varied(t, &out[at..at + n], k);
                at += n;
            }
            t.write_shared(Rc::from(&out[at..]));
        });
        (log, p)
    });
    let client = Log::new("held client", Some(out));
    let p = proto(&client).on_made(|cx, log| {
        cx.transport().pause_producing();
        log.paused.set(true);
        cx.transport()
            .tcp()
            .unwrap()
            .set_receive_buffer_size(32 << 10)
            .unwrap();
    });
    connect(reactor, &port, &client, p);
    let clients: Logs = Rc::new(RefCell::new(vec![client]));
    wait(reactor, &[&servers, &clients], || {
        clients.borrow()[0].transport.borrow().is_some()
            && servers
                .borrow()
                .first()
                .is_some_and(|s| s.transport.borrow().is_some())
    });
    // Some turns for the sends to get going (and, on io_uring, be in flight).
    for _ in 0..5 {
        reactor.iterate(Some(Duration::from_millis(5))).unwrap();
    }
    (port, servers, clients)
}

/// Lets the held client read.
fn release(client: &Log) {
    client.paused.set(false);
    client.transport().resume_producing();
}

fn lose_connection_with_sixteen_mib_pending_delivers_all_of_it_then_eof(
    reactor: &Reactor,
    cfg: Cfg,
) {
    let len = cfg.volume(16 << 20);
    let (port, servers, clients) = pending_send(reactor, stream(5, len));
    let server = servers.borrow()[0].clone();
    let client = clients.borrow()[0].clone();
    server.transport().lose_connection();
    assert!(server.transport().disconnecting());
    for _ in 0..5 {
        reactor.iterate(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(
        !server.is_lost(),
        "closed with the reply pending: {:?}",
        server.lost.borrow()
    );
    assert_eq!(client.got.get(), 0, "the held client received data");
    release(&client);
    wait(reactor, &[&servers, &clients], || {
        client.is_lost() && server.is_lost()
    });
    client.assert_complete_and_clean();
    server.assert_complete_and_clean();
    finish(reactor, port);
}

on_every_backend!(run_case: lose_connection_with_sixteen_mib_pending_delivers_all_of_it_then_eof);

fn abort_with_sixteen_mib_pending_resets_and_loses_the_rest(reactor: &Reactor, cfg: Cfg) {
    let len = cfg.volume(16 << 20);
    let (port, servers, clients) = pending_send(reactor, stream(6, len));
    let server = servers.borrow()[0].clone();
    let client = clients.borrow()[0].clone();
    server.transport().abort_connection();
    assert!(!server.transport().connected());
    server
        .transport()
        .write(b"dropped: the connection is being aborted");
    wait(reactor, &[&servers, &clients], || server.is_lost());
    let reason = server.reason();
    assert!(matches!(reason, Reason::ConnectionAborted), "{reason:?}");
    release(&client);
    wait(reactor, &[&servers, &clients], || client.is_lost());
    client.assert_ok(); // what arrived is a prefix of the stream
    assert!(
        client.got.get() < len,
        "all {len} bytes arrived after an abort"
    );
    let reason = client.reason();
    assert!(
        matches!(reason, Reason::ConnectionLost(_) | Reason::ConnectionDone),
        "{reason:?}"
    );
    finish(reactor, port);
}

on_every_backend!(run_case: abort_with_sixteen_mib_pending_resets_and_loses_the_rest);

fn a_peer_that_vanishes_mid_send_loses_the_connection_with_an_error(reactor: &Reactor, cfg: Cfg) {
    // The peer reads a little of a long reply, then goes: by abort (a reset), then by a
    // plain close with the reply still arriving.
    let len = cfg.volume(16 << 20);
    for abort in [true, false] {
        let (port, servers, clients) = pending_send(reactor, stream(7, len));
        let server = servers.borrow()[0].clone();
        let client = clients.borrow()[0].clone();
        release(&client);
        wait(reactor, &[&servers, &clients], || {
            client.got.get() >= 64 << 10
        });
        let t = client.transport();
        if abort {
            t.abort_connection();
        } else {
            t.lose_connection();
        }
        wait(reactor, &[&servers, &clients], || {
            server.is_lost() && client.is_lost()
        });
        server.assert_ok();
        let reason = server.reason();
        let reset_or_pipe = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        };
        assert!(
            matches!(&reason, Reason::ConnectionLost(e) if e.as_deref().is_none_or(reset_or_pipe)),
            "abort {abort}: the server's connection ended with {reason:?}"
        );
        client.assert_ok();
        assert!(client.got.get() < len);
        let reason = client.reason();
        if abort {
            assert!(matches!(reason, Reason::ConnectionAborted), "{reason:?}");
        } else {
            assert!(reason.is_clean(), "{reason:?}");
        }
        finish(reactor, port);
    }
}

on_every_backend!(run_case: a_peer_that_vanishes_mid_send_loses_the_connection_with_an_error);

fn an_abort_from_data_received_mid_echo_stops_delivery_at_once(reactor: &Reactor, cfg: Cfg) {
    // The server aborts inside data_received, just after queueing a large echo: nothing
    // more may be delivered to it (received data still in flight included), its
    // connection_lost says aborted, and its peer is reset after an exact prefix.
    let len = cfg.volume(4 << 20);
    let after = cfg.volume(256 << 10);
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("aborting server {i}"), None);
        let p = proto(&log).on_data(move |cx, log, data| {
            let t = cx.transport();
            t.write(data);
            if log.got.get() >= after {
                t.write(&[0u8; 1 << 20]); // dropped with the buffer
                t.abort_connection();
                if t.connected() {
                    log.error("connected after abort_connection".into());
                }
                log.paused.set(true); // any later delivery is an error
            }
        });
        (log, p)
    });
    let (client, p) = echo_client("client".into(), stream(60, len), 1 << 20);
    connect(reactor, &port, &client, p);
    let clients: Logs = Rc::new(RefCell::new(vec![client.clone()]));
    wait(reactor, &[&servers, &clients], || {
        client.is_lost() && servers.borrow().first().is_some_and(|s| s.is_lost())
    });
    let server = servers.borrow()[0].clone();
    server.assert_ok();
    let reason = server.reason();
    assert!(matches!(reason, Reason::ConnectionAborted), "{reason:?}");
    client.assert_ok(); // an exact prefix of the echo, never the 1 MiB of zeros
    assert!(client.got.get() <= server.got.get() && client.got.get() < len);
    let reason = client.reason();
    assert!(matches!(reason, Reason::ConnectionLost(_)), "{reason:?}");
    finish(reactor, port);
}

on_every_backend!(run_case: an_abort_from_data_received_mid_echo_stops_delivery_at_once);

// ------------------------------------------------------------------------------ 4. shutdown

/// Pairs echoing long streams, far from done when the clients have received `threshold`
/// bytes in all.
struct Busy {
    port: ListeningPort,
    servers: Logs,
    clients: Logs,
    threshold: usize,
}

const BUSY_PAIRS: u32 = 24;

/// Starts the pairs; with `stop`, the client whose delivery reaches the threshold stops the
/// reactor from inside its `data_received`.
fn busy(reactor: &Reactor, cfg: Cfg, stop: bool) -> Busy {
    let (port, servers) = echo_server(reactor);
    let clients: Logs = Rc::default();
    // Not cut down for tiny rings: only the threshold is carried before the shutdown, and no
    // stream may be finished by then.
    let len = 2 << 20;
    let threshold = cfg.volume(BUSY_PAIRS as usize * (64 << 10));
    let total = Rc::new(Cell::new(0usize));
    for i in 0..BUSY_PAIRS {
        let (log, mut p) = echo_client(format!("busy client {i}"), stream(100 + i, len), 256 << 10);
        if stop {
            let mut inner = p.data.take().expect("the echo client has a data hook");
            let total = total.clone();
            let all = (servers.clone(), clients.clone());
            p.data = Some(Box::new(move |cx, log, data| {
                inner(cx, log, data);
                total.set(total.get() + data.len());
                if total.get() >= threshold && everyone_connected(&all.0, &all.1) {
                    let _ = cx.reactor().stop(); // refused once already stopping
                }
            }));
        }
        connect(reactor, &port, &log, p);
        clients.borrow_mut().push(log);
    }
    Busy {
        port,
        servers,
        clients,
        threshold,
    }
}

/// Every client connected and accepted.
fn everyone_connected(servers: &Logs, clients: &Logs) -> bool {
    servers.borrow().len() == BUSY_PAIRS as usize
        && clients.borrow().len() == BUSY_PAIRS as usize
        && clients
            .borrow()
            .iter()
            .all(|c| c.transport.borrow().is_some())
}

impl Busy {
    fn received(&self) -> usize {
        self.clients.borrow().iter().map(|c| c.got.get()).sum()
    }

    /// Every protocol heard of the shutdown once (or, for a transfer that was over, of its
    /// clean end), saw only exact bytes, and was released; most transfers were cut mid-way.
    fn check_shut_down(&self) {
        let clients = self.clients.borrow();
        let servers = self.servers.borrow();
        assert!(self.received() >= self.threshold);
        assert_eq!(servers.len(), clients.len(), "every client was accepted");
        for l in clients.iter().chain(servers.iter()) {
            l.assert_ok();
            let reason = l.reason();
            assert!(
                matches!(reason, Reason::ReactorShutdown | Reason::ConnectionDone),
                "{}: {reason:?}",
                l.name
            );
            assert!(l.dropped.get(), "{}: the protocol was not released", l.name);
        }
        let mut cut = 0;
        for c in clients.iter() {
            if c.complete() {
                assert!(c.reason().is_clean(), "{}: {:?}", c.name, c.reason());
            } else {
                assert!(
                    matches!(c.reason(), Reason::ReactorShutdown),
                    "{}: {:?}",
                    c.name,
                    c.reason()
                );
                cut += 1;
            }
        }
        let shut = servers
            .iter()
            .filter(|s| matches!(s.reason(), Reason::ReactorShutdown))
            .count();
        assert!(
            shut >= cut,
            "{cut} transfers cut, {shut} servers told of the shutdown"
        );
        assert!(
            cut * 2 > clients.len(),
            "only {cut} transfers were cut by the shutdown"
        );
    }
}

fn stopping_the_reactor_mid_transfer_loses_every_connection_once(reactor: &Reactor, cfg: Cfg) {
    let b = busy(reactor, cfg, true);
    // Only for failure: a transfer that stalls stops the reactor here instead.
    let stalled = Rc::new(Cell::new(false));
    let s2 = stalled.clone();
    let limit = reactor.call_later(LIMIT, move |r| {
        s2.set(true);
        let _ = r.stop();
    });
    reactor.run().unwrap();
    assert!(
        !stalled.get(),
        "the transfers stalled below {} bytes",
        b.threshold
    );
    let _ = limit.cancel();
    b.check_shut_down();
    b.port.stop_listening();
}

on_every_backend!(run_case: stopping_the_reactor_mid_transfer_loses_every_connection_once);

fn dropping_the_reactor_mid_transfer_loses_every_connection_once(reactor: Reactor, cfg: Cfg) {
    let b = busy(&reactor, cfg, false);
    let logs = [&b.servers, &b.clients];
    wait(&reactor, &logs, || {
        b.received() >= b.threshold && everyone_connected(&b.servers, &b.clients)
    });
    // Without stop: the last handle goes with sends and receives in flight.
    drop(reactor);
    b.check_shut_down();
}

on_every_backend!(run_owned: dropping_the_reactor_mid_transfer_loses_every_connection_once);

// ------------------------------------------------------------------------------ 5. half-close

/// A server that takes a whole request up to the peer's FIN, then (keeping the connection
/// open for writing) sends a reply in varied writes and closes.
fn replier(reactor: &Reactor, request: Rc<[u8]>, reply: Rc<[u8]>) -> (ListeningPort, Logs) {
    serve(reactor, move |i| {
        let log = Log::new(format!("replying server {i}"), Some(request.clone()));
        let reply = reply.clone();
        let p = proto(&log).on_read_closed(move |cx, log| {
            if !log.complete() {
                log.error(format!(
                    "the FIN came after {} bytes of the request",
                    log.got.get()
                ));
            }
            let t = cx.transport();
            let mut at = 0;
            for (k, &size) in CHUNKS.iter().cycle().enumerate() {
                if at == reply.len() {
                    break;
                }
                let n = size.min(reply.len() - at);
                write_varied(t, &reply[at..at + n], k);
                at += n;
            }
            t.lose_connection();
        });
        (log, p)
    })
}

fn a_reply_written_after_the_peers_fin_arrives_whole(reactor: &Reactor, cfg: Cfg) {
    let request = stream(8, cfg.volume(2 << 20));
    let reply = stream(9, cfg.volume(3 << 20));
    let (port, servers) = replier(reactor, request.clone(), reply.clone());
    // A torsion client: the request through a streaming producer, then
    // lose_write_connection at once, with the request's last writes still to be sent.
    let (client, clients) = writer(
        reactor,
        &port,
        "half-closing client",
        reply.clone(),
        request.clone(),
        Then::LoseWriteConnection,
    );
    wait(reactor, &[&servers, &clients], || {
        client.is_lost() && servers.borrow().first().is_some_and(|s| s.is_lost())
    });
    client.assert_complete_and_clean();
    assert_eq!(
        *client.events.borrow(),
        ["made", "write_closed", "read_closed", "lost"]
    );
    let server = servers.borrow()[0].clone();
    server.assert_complete_and_clean();
    assert_eq!(*server.events.borrow(), ["made", "read_closed", "lost"]);

    // A plain socket: the request in single bytes to 100 KiB segments, FIN, then the reply
    // read to its end.
    let addr = port.address().as_tcp().unwrap();
    let (req, rep) = (request.to_vec(), reply.to_vec());
    let peer = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        write_chunked(&mut c, &req);
        c.shutdown(Shutdown::Write).unwrap();
        read_checked(&mut c, &rep)
    });
    wait(reactor, &[&servers], || peer.is_finished());
    let (got, end) = peer.join().unwrap();
    end.expect("a clean end");
    assert_eq!(got, reply.len());
    wait(reactor, &[&servers], || servers.borrow()[1].is_lost());
    servers.borrow()[1].assert_complete_and_clean();
    finish(reactor, port);
}

on_every_backend!(run_case: a_reply_written_after_the_peers_fin_arrives_whole);

// ------------------------------------------------------------------------------ 6. a panic

fn a_protocol_that_panics_mid_stream_loses_only_its_connection(reactor: &Reactor, cfg: Cfg) {
    const N: u32 = 6;
    const VICTIM: usize = 2;
    let len = cfg.volume(512 << 10);
    let panic_after = cfg.volume(40 << 10);
    let (port, servers) = serve(reactor, move |i| {
        let log = Log::new(format!("server {i}"), None);
        let p = proto(&log).on_data(move |cx, log, data| {
            // Before echoing: the victim's echo can never be complete.
            if i == VICTIM && log.got.get() >= panic_after {
                panic!("a deliberate panic in data_received, mid-stream");
            }
            cx.transport().write(data);
        });
        (log, p)
    });
    let clients: Logs = Rc::default();
    for i in 0..N {
        let (log, p) = echo_client(format!("client {i}"), stream(20 + i, len), 64 << 10);
        connect(reactor, &port, &log, p);
        clients.borrow_mut().push(log);
    }
    // Not `wait`: the victim's client records no error, and the others must not either.
    run_until(reactor, LIMIT, || {
        clients.borrow().iter().all(|c| c.is_lost())
            && servers.borrow().len() == N as usize
            && servers.borrow().iter().all(|s| s.is_lost())
    });
    let servers = servers.borrow();
    for (i, s) in servers.iter().enumerate() {
        s.assert_ok();
        let reason = s.reason();
        if i == VICTIM {
            assert!(matches!(reason, Reason::Panicked(_)), "{reason:?}");
            assert!(s.dropped.get(), "the panicking protocol was not released");
        } else {
            assert!(reason.is_clean(), "{}: {reason:?}", s.name);
        }
    }
    let (mut cut, mut whole) = (0, 0);
    for c in clients.borrow().iter() {
        c.assert_ok(); // every byte that arrived is exact, the victim's included
        if c.complete() {
            c.assert_complete_and_clean();
            whole += 1;
        } else {
            let reason = c.reason();
            assert!(
                matches!(reason, Reason::ConnectionLost(_)),
                "{}: cut at {} and ended with {reason:?}",
                c.name,
                c.got.get()
            );
            cut += 1;
        }
    }
    assert_eq!((cut, whole), (1, N as usize - 1));
    finish(reactor, port);
}

on_every_backend!(run_case: a_protocol_that_panics_mid_stream_loses_only_its_connection);

// ------------------------------------------------------------------------------ 7. statistics

/// Echoes `len` bytes over one connection on io_uring with `ring`; the reactor's statistics
/// after, or `None` where the kernel has no io_uring.
fn uring_echo_stats(ring: Option<(u16, u32)>, len: usize) -> Option<torsion::reactor::Stats> {
    if !Backend::IoUring.available() {
        eprintln!("io_uring is unavailable: nothing to count");
        return None;
    }
    let mut stats = None;
    run_case(Backend::IoUring, ring, |reactor, _| {
        let (port, servers) = echo_server(reactor);
        let (log, p) = echo_client("client".into(), stream(30, len), 256 << 10);
        connect(reactor, &port, &log, p);
        let clients: Logs = Rc::new(RefCell::new(vec![log.clone()]));
        wait(reactor, &[&servers, &clients], || {
            log.is_lost() && servers.borrow().iter().all(|s| s.is_lost())
        });
        log.assert_complete_and_clean();
        finish(reactor, port);
        stats = Some(reactor.stats());
    });
    stats
}

#[test]
fn io_uring_counts_the_completions_of_tcp_traffic() {
    let Some(stats) = uring_echo_stats(None, 1 << 20) else {
        return;
    };
    assert_eq!(stats.backend, "io_uring");
    assert!(stats.bytes_read >= 2 << 20, "{stats}");
    assert!(stats.completions > 0, "{stats}");
}

#[test]
fn a_one_buffer_ring_under_a_mib_of_load_runs_dry_and_loses_nothing() {
    let Some(stats) = uring_echo_stats(Some((1, 16)), 1 << 20) else {
        return;
    };
    assert!(stats.completions > 0, "{stats}");
    assert!(stats.buffer_ring_exhausted > 0, "{stats}");
}

#[test]
fn the_readiness_backends_count_no_completions() {
    for backend in [Backend::Select, Backend::Poll, Backend::Epoll] {
        run_case(backend, Some((1, 16)), |reactor, _| {
            let (port, servers) = echo_server(reactor);
            let (log, p) = echo_client("client".into(), stream(31, 256 << 10), 64 << 10);
            connect(reactor, &port, &log, p);
            let clients: Logs = Rc::new(RefCell::new(vec![log.clone()]));
            wait(reactor, &[&servers, &clients], || {
                log.is_lost() && servers.borrow().iter().all(|s| s.is_lost())
            });
            log.assert_complete_and_clean();
            let stats = reactor.stats();
            assert!(stats.bytes_read >= 512 << 10, "{stats}");
            assert_eq!(
                (stats.completions, stats.buffer_ring_exhausted),
                (0, 0),
                "{stats}"
            );
            finish(reactor, port);
        });
    }
}

// ------------------------------------------------------------------------------ found here

/// Found while writing these tests: a handle kept by a protocol (or by a queued call) made a
/// cycle reactor -> registration -> protocol -> reactor, so dropping the user's handle closed
/// nothing and the listener, the connections, the poller (an io_uring ring and its buffers)
/// and the waker stayed open for ever. The handle a constructor returns owns the reactor now:
/// dropping it ends every registration, and the leak check that follows finds nothing open.
#[test]
fn dropping_the_reactor_while_a_protocol_keeps_a_clone_closes_everything() {
    for backend in [Backend::Epoll, Backend::IoUring] {
        run_owned(backend, None, |reactor, _| {
            let (port, servers) = serve(&reactor, |i| {
                let log = Log::new(format!("server {i}"), None);
                let keep: RefCell<Option<Reactor>> = RefCell::default();
                let p = proto(&log).on_made(move |cx, _| {
                    *keep.borrow_mut() = Some(cx.reactor().clone());
                });
                (log, p)
            });
            let client = Log::new("client", None);
            connect(&reactor, &port, &client, proto(&client));
            let clients: Logs = Rc::new(RefCell::new(vec![client.clone()]));
            wait(&reactor, &[&servers, &clients], || {
                servers.borrow().len() == 1 && client.transport.borrow().is_some()
            });
            drop(reactor);
            let server = servers.borrow()[0].clone();
            assert!(
                server.is_lost() && client.is_lost(),
                "no connection_lost after the reactor was dropped"
            );
            // The leak check that follows finds every descriptor closed.
        });
    }
}
