//! One set of protocol-level tests, run over every stream transport: TCP and Unix sockets (on
//! every backend, each test ending with the leak check) and the testing kit's in-memory
//! connected pair. A protocol written for one of them must not see the difference.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion::interfaces::UnixAddress;
use torsion::testing::IoPump;
use torsion::{
    Address, ClientFactory, Context, HalfClose, ListeningPort, Producer, Protocol, ProtocolFactory,
    Reactor, Reason, Transport,
};

/// Which transport a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    Unix,
    Pair,
}

/// Hands out one protocol, once (a listener's or a connector's factory).
struct Once(RefCell<Option<Box<dyn Protocol>>>);

impl ProtocolFactory for Once {
    fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().take()
    }
}

impl ClientFactory for Once {}

fn once(p: Box<dyn Protocol>) -> Rc<Once> {
    Rc::new(Once(RefCell::new(Some(p))))
}

/// A server and a client protocol connected over one transport.
struct Session<'r> {
    reactor: &'r Reactor,
    port: Option<ListeningPort>,
    pump: Option<IoPump>,
}

impl<'r> Session<'r> {
    fn start(
        over: Over,
        reactor: &'r Reactor,
        server: impl Protocol + 'static,
        client: impl Protocol + 'static,
    ) -> Session<'r> {
        let (server, client): (Box<dyn Protocol>, Box<dyn Protocol>) =
            (Box::new(server), Box::new(client));
        let timeout = Duration::from_secs(10);
        let mut s = Session {
            reactor,
            port: None,
            pump: None,
        };
        match over {
            Over::Tcp => {
                let port = reactor.listen_tcp("127.0.0.1:0", once(server)).unwrap();
                reactor.connect_tcp("127.0.0.1", port.port(), once(client), timeout);
                s.port = Some(port);
            }
            Over::Unix => {
                let name = format!("torsion-suite-{}", std::process::id());
                let addr = UnixAddress::abstract_name(name);
                let port = reactor.listen_unix(addr.clone(), once(server)).unwrap();
                reactor.connect_unix(addr, once(client), timeout);
                s.port = Some(port);
            }
            Over::Pair => s.pump = Some(IoPump::new(reactor, server, client)),
        }
        s
    }

    /// Runs the connection until `done`.
    ///
    /// # Panics
    /// After 30 s on real sockets; when the pair goes quiet first.
    fn run_until(&self, mut done: impl FnMut() -> bool) {
        match &self.pump {
            Some(p) => {
                while !done() {
                    assert!(p.pump(), "the pair went quiet before the test's condition");
                }
            }
            None => torsion::testing::run_until(self.reactor, Duration::from_secs(30), done),
        }
    }

    /// Waits for both ends to be closed, then stops listening.
    fn finish(self) {
        if let Some(p) = &self.pump {
            p.flush();
            assert!(p.closed(), "both ends of the pair closed");
        }
        if let Some(port) = &self.port {
            torsion::testing::run_until(self.reactor, Duration::from_secs(30), || {
                self.reactor.descriptor_count() == 1
            });
            port.stop_listening();
        }
    }
}

/// What one end saw.
#[derive(Default)]
struct Log {
    data: RefCell<Vec<u8>>,
    transport: RefCell<Option<Transport>>,
    lost: RefCell<Option<Reason>>,
    read_closed: Cell<bool>,
    write_closed: Cell<bool>,
}

type Hook = Box<dyn FnMut(&Transport, &Log)>;

/// A protocol of hooks that records into its [`Log`].
struct P {
    log: Rc<Log>,
    made: Option<Hook>,
    data: Option<Hook>,
    half_close: HalfClose,
    read_closed: Option<Hook>,
}

fn p(log: &Rc<Log>) -> P {
    P {
        log: log.clone(),
        made: None,
        data: None,
        half_close: HalfClose::Close,
        read_closed: None,
    }
}

impl P {
    fn on_made(mut self, h: impl FnMut(&Transport, &Log) + 'static) -> P {
        self.made = Some(Box::new(h));
        self
    }
    fn on_data(mut self, h: impl FnMut(&Transport, &Log) + 'static) -> P {
        self.data = Some(Box::new(h));
        self
    }
    fn on_read_closed(mut self, h: impl FnMut(&Transport, &Log) + 'static) -> P {
        self.half_close = HalfClose::KeepWriting;
        self.read_closed = Some(Box::new(h));
        self
    }
}

impl Protocol for P {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.log.transport.borrow_mut() = Some(cx.transport().clone());
        if let Some(h) = &mut self.made {
            h(cx.transport(), &self.log);
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.log.data.borrow_mut().extend_from_slice(data);
        if let Some(h) = &mut self.data {
            h(cx.transport(), &self.log);
        }
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.log.read_closed.set(true);
        if let Some(h) = &mut self.read_closed {
            h(cx.transport(), &self.log);
        }
        self.half_close
    }

    fn write_connection_lost(&mut self, _: &mut Context<'_>) {
        self.log.write_closed.set(true);
    }

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        assert!(self.log.lost.borrow().is_none(), "connection_lost twice");
        *self.log.lost.borrow_mut() = Some(reason);
    }
}

fn lost(log: &Log) -> bool {
    log.lost.borrow().is_some()
}

fn reason(log: &Log) -> Reason {
    log.lost.borrow().clone().expect("connection lost")
}

/// Deterministic bytes: position `i` of a stream.
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

// ----------------------------------------------------------------------------------- the suite

fn echo(over: Over, r: &Reactor) {
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let server = p(&s).on_data(|t, log| {
        let d = std::mem::take(&mut *log.data.borrow_mut());
        t.write(&d);
    });
    let client = p(&c)
        .on_made(|t, _| t.write_sequence(&[b"hello, ", b"transport"]))
        .on_data(|t, log| {
            if log.data.borrow().len() == 16 {
                t.lose_connection();
            }
        });
    let session = Session::start(over, r, server, client);
    session.run_until(|| lost(&s) && lost(&c));
    assert_eq!(&c.data.borrow()[..], b"hello, transport");
    assert!(matches!(reason(&c), Reason::ConnectionDone), "{over:?}");
    assert!(matches!(reason(&s), Reason::ConnectionDone), "{over:?}");
    session.finish();
}

/// A streaming producer that writes `total` bytes in 16 KiB pieces while not paused.
struct Pusher {
    t: Transport,
    sent: Cell<usize>,
    total: usize,
    paused: Cell<bool>,
    pauses: Rc<Cell<usize>>,
}

impl Pusher {
    fn push(&self) {
        while !self.paused.get() && self.sent.get() < self.total {
            let start = self.sent.get();
            let n = (self.total - start).min(16 * 1024);
            let piece: Vec<u8> = (start..start + n).map(byte).collect();
            self.sent.set(start + n);
            self.t.write(&piece); // may pause us
        }
        if self.sent.get() == self.total && !self.paused.get() {
            self.t.unregister_producer();
            self.t.lose_connection();
        }
    }
}

impl Producer for Pusher {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.push();
    }
}

fn large_transfer_with_backpressure(over: Over, r: &Reactor) {
    const TOTAL: usize = 16 << 20;
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let pauses = Rc::new(Cell::new(0));
    let pz = pauses.clone();
    let server = p(&s).on_made(move |t, _| {
        let pusher = Rc::new(Pusher {
            t: t.clone(),
            sent: Cell::new(0),
            total: TOTAL,
            paused: Cell::new(false),
            pauses: pz.clone(),
        });
        t.register_producer(pusher.clone(), true).unwrap();
        pusher.push();
    });
    let client = p(&c);
    let session = Session::start(over, r, server, client);
    session.run_until(|| lost(&c) && lost(&s));
    let data = c.data.borrow();
    assert_eq!(data.len(), TOTAL, "{over:?}");
    assert!(
        data.iter().enumerate().all(|(i, b)| *b == byte(i)),
        "{over:?}: corrupted"
    );
    assert!(pauses.get() > 0, "{over:?}: the producer was never paused");
    assert!(matches!(reason(&c), Reason::ConnectionDone), "{over:?}");
    drop(data);
    session.finish();
}

fn half_close(over: Over, r: &Reactor) {
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let server = p(&s).on_read_closed(|t, log| {
        let mut reply = b"got ".to_vec();
        reply.extend_from_slice(&log.data.borrow());
        t.write(&reply);
        t.lose_connection();
    });
    let client = p(&c).on_made(|t, _| {
        t.write(b"request");
        t.lose_write_connection();
    });
    let session = Session::start(over, r, server, client);
    session.run_until(|| lost(&s) && lost(&c));
    assert!(c.write_closed.get() && s.read_closed.get(), "{over:?}");
    assert_eq!(&c.data.borrow()[..], b"got request", "{over:?}");
    assert!(matches!(reason(&c), Reason::ConnectionDone), "{over:?}");
    assert!(matches!(reason(&s), Reason::ConnectionDone), "{over:?}");
    session.finish();
}

fn lose_connection_flushes_first(over: Over, r: &Reactor) {
    const TOTAL: usize = 2 << 20;
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let server = p(&s).on_made(|t, _| {
        let all: Vec<u8> = (0..TOTAL).map(byte).collect();
        t.write(&all);
        t.lose_connection();
        assert!(t.disconnecting());
        t.write(b"!"); // still accepted while the buffer flushes, as in Twisted
    });
    let session = Session::start(over, r, server, p(&c));
    session.run_until(|| lost(&s) && lost(&c));
    let data = c.data.borrow();
    assert_eq!(data.len(), TOTAL + 1, "{over:?}");
    assert!(data[..TOTAL].iter().enumerate().all(|(i, b)| *b == byte(i)));
    assert!(matches!(reason(&s), Reason::ConnectionDone), "{over:?}");
    assert!(matches!(reason(&c), Reason::ConnectionDone), "{over:?}");
    drop(data);
    session.finish();
}

fn abort_discards_and_closes_both_ends(over: Over, r: &Reactor) {
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let server = p(&s).on_made(|t, _| {
        t.write(&vec![7u8; 8 << 20]);
        t.abort_connection();
        assert!(!t.connected());
        t.write(b"dropped");
        assert_eq!(t.buffered(), 0, "the buffer is discarded");
    });
    let session = Session::start(over, r, server, p(&c));
    session.run_until(|| lost(&s) && lost(&c));
    assert!(matches!(reason(&s), Reason::ConnectionAborted), "{over:?}");
    assert!(
        c.data.borrow().len() < 8 << 20,
        "{over:?}: the abort discarded the rest"
    );
    session.finish();
}

fn pausing_a_transport_stops_its_reading(over: Over, r: &Reactor) {
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let server = p(&s).on_made(|t, _| t.pause_producing());
    let client = p(&c).on_made(|t, _| t.write(b"wait for it"));
    let session = Session::start(over, r, server, client);
    match &session.pump {
        // The pair moves nothing to a paused reader: pumped until quiet.
        Some(pump) => pump.flush(),
        None => {
            // Sent (out of the client's buffer), then a few more iterations: nothing is read.
            session.run_until(|| {
                c.transport
                    .borrow()
                    .as_ref()
                    .is_some_and(|t| t.buffered() == 0)
                    && s.transport.borrow().is_some()
            });
            for _ in 0..5 {
                r.iterate(Some(Duration::from_millis(10))).unwrap();
            }
        }
    }
    assert!(s.data.borrow().is_empty(), "{over:?}: read while paused");
    let st = s.transport.borrow().clone().unwrap();
    st.resume_producing();
    session.run_until(|| s.data.borrow().len() == 11);
    assert_eq!(&s.data.borrow()[..], b"wait for it");
    st.lose_connection();
    session.run_until(|| lost(&s) && lost(&c));
    session.finish();
}

fn each_end_sees_the_other_as_its_peer(over: Over, r: &Reactor) {
    let (s, c) = (Rc::new(Log::default()), Rc::new(Log::default()));
    let client = p(&c).on_made(|t, _| t.lose_connection());
    let session = Session::start(over, r, p(&s), client);
    session.run_until(|| s.transport.borrow().is_some() && c.transport.borrow().is_some());
    let (st, ct) = (
        s.transport.borrow().clone().unwrap(),
        c.transport.borrow().clone().unwrap(),
    );
    assert_eq!(st.peer(), ct.host(), "{over:?}");
    assert_eq!(st.host(), ct.peer(), "{over:?}");
    match over {
        Over::Tcp => assert!(st.tcp().is_some() && st.unix().is_none()),
        Over::Unix => {
            assert!(st.unix().is_some() && st.tcp().is_none());
            assert_eq!(st.peer(), Address::Unix(UnixAddress::Unnamed));
        }
        Over::Pair => assert!(st.tcp().is_none() && st.unix().is_none()),
    }
    if let Some(port) = &session.port {
        assert_eq!(ct.peer(), port.address(), "{over:?}");
    }
    session.run_until(|| lost(&s) && lost(&c));
    session.finish();
}

/// Runs each test over TCP and Unix sockets on every backend, and over the in-memory pair.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use torsion::reactor_test;

                reactor_test! {
                    fn tcp(reactor) {
                        crate::$name(crate::Over::Tcp, reactor)
                    }
                    fn unix(reactor) {
                        crate::$name(crate::Over::Unix, reactor)
                    }
                }

                #[test]
                fn pair() {
                    torsion::testing::run_reactor_test(torsion::Backend::Poll, |r| {
                        crate::$name(crate::Over::Pair, r)
                    });
                }
            }
        )*
    };
}

suite! {
    echo,
    large_transfer_with_backpressure,
    half_close,
    lose_connection_flushes_first,
    abort_discards_and_closes_both_ends,
    pausing_a_transport_stops_its_reading,
    each_end_sees_the_other_as_its_peer,
}
