//! Protocol policies: idle timeouts, throttling and connection limits, on the fake clock with
//! the in-memory transports, and over TCP on every backend.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use torsion::protocols::policies::{
    IdleTimeout, LimitConnectionsByPeer, LimitTotalConnectionsFactory, PolicyError,
    ThrottlingFactory, TimeoutFactory, TimeoutProtocol,
};
use torsion::testing::{
    connected_pair, connected_pair_with, run_until, MemoryReactor, StringTransport,
};
use torsion::{
    reactor_test, Address, Context, Factory, Producer, Protocol, ProtocolFactory, Reason, Transport,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What one connection's protocol saw.
#[derive(Default)]
struct Log {
    made: Cell<u32>,
    data: RefCell<Vec<u8>>,
    lost: RefCell<Option<Reason>>,
    transport: RefCell<Option<Transport>>,
}

struct Rec(Rc<Log>);
impl Protocol for Rec {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.0.made.set(self.0.made.get() + 1);
        *self.0.transport.borrow_mut() = Some(cx.transport().clone());
    }
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.0.lost.borrow_mut() = Some(reason);
        self.0.transport.borrow_mut().take();
    }
}

/// A factory whose every protocol records into a new log, kept in `logs`.
type Logs = RefCell<Vec<Rc<Log>>>;

fn recording() -> (Factory<Logs>, Rc<Logs>) {
    let f = Factory::with_state(RefCell::new(Vec::new()), |logs, _| {
        let log = Rc::new(Log::default());
        logs.borrow_mut().push(log.clone());
        Rec(log)
    });
    let logs = f.state().clone();
    (f, logs)
}

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

fn quiet() -> Factory {
    Factory::for_protocol(|| Quiet)
}

// ----------------------------------------------------------------------------- IdleTimeout

/// A protocol embedding an IdleTimeout the way TimeoutMixin users do.
struct Embedding {
    idle: IdleTimeout,
    period: Option<Duration>,
    lost: Rc<RefCell<Option<Reason>>>,
}

impl Protocol for Embedding {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.idle.set_timeout(cx, self.period);
    }
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {
        self.idle.reset_timeout();
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.idle.cancel_timeout();
        *self.lost.borrow_mut() = Some(self.idle.reason(reason));
    }
}

#[test]
fn idle_timeout_set_reset_expire() {
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let lost = Rc::new(RefCell::new(None));
    let idle = IdleTimeout::new();
    let mut p = Embedding {
        idle: idle.clone(),
        period: Some(secs(10)),
        lost: lost.clone(),
    };
    t.connect(&mut p);
    assert!(idle.active());
    assert_eq!(mr.reactor().delayed_calls().len(), 1);
    for _ in 0..5 {
        mr.advance(secs(9));
        t.receive(&mut p, b"x");
    }
    assert!(!t.aborted(), "traffic did not reset the timer");
    mr.advance(Duration::from_millis(9_999));
    assert!(!t.aborted());
    mr.advance(Duration::from_millis(1));
    assert!(t.aborted(), "ten idle seconds did not expire");
    assert!(idle.expired());
    assert!(!idle.active());
    assert!(mr.reactor().delayed_calls().is_empty());
    // Reset after expiry does nothing (no timer comes back).
    idle.reset_timeout();
    assert!(mr.reactor().delayed_calls().is_empty());
    t.lose(&mut p, Reason::ConnectionAborted);
    let got = lost.borrow().clone();
    match got {
        Some(Reason::TimedOut(to)) => assert_eq!(to.after, secs(10)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

#[test]
fn idle_timeout_cancel_really_cancels() {
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let lost = Rc::new(RefCell::new(None));
    let mut p = Embedding {
        idle: IdleTimeout::new(),
        period: Some(secs(10)),
        lost: lost.clone(),
    };
    t.connect(&mut p);
    let call = mr.reactor().delayed_calls()[0].clone();
    p.idle.cancel_timeout();
    assert!(call.cancelled());
    assert!(mr.reactor().delayed_calls().is_empty());
    mr.advance(secs(100));
    assert!(!t.aborted());
    // A connection closed normally keeps its reason.
    t.lose(&mut p, Reason::ConnectionDone);
    assert!(matches!(*lost.borrow(), Some(Reason::ConnectionDone)));

    // Dropping the last handle cancels too.
    let t2 = StringTransport::on(mr.reactor());
    let idle = IdleTimeout::new();
    idle.set_timeout_on(mr.reactor(), t2.transport(), Some(secs(5)));
    let call = mr.reactor().delayed_calls()[0].clone();
    drop(idle);
    assert!(call.cancelled());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn idle_timeout_set_returns_the_old_period_and_none_turns_it_off() {
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let idle = IdleTimeout::new();
    assert_eq!(
        idle.set_timeout_on(mr.reactor(), t.transport(), Some(secs(5))),
        None
    );
    assert_eq!(
        idle.set_timeout_on(mr.reactor(), t.transport(), Some(secs(7))),
        Some(secs(5))
    );
    // Only one timer: the old one was cancelled.
    assert_eq!(mr.reactor().delayed_calls().len(), 1);
    assert_eq!(
        idle.set_timeout_on(mr.reactor(), t.transport(), None),
        Some(secs(7))
    );
    assert!(mr.reactor().delayed_calls().is_empty());
    assert_eq!(idle.timeout(), None);
    mr.advance(secs(100));
    assert!(!t.aborted());
}

#[test]
fn idle_timeout_custom_hook() {
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    let idle = IdleTimeout::new().on_expiry(move |_, transport, _| {
        r.set(r.get() + 1);
        transport.write(b"idle too long, bye\r\n");
        transport.lose_connection();
    });
    idle.set_timeout_on(mr.reactor(), t.transport(), Some(secs(3)));
    mr.advance(secs(3));
    assert_eq!(ran.get(), 1);
    assert!(!t.aborted());
    assert!(t.disconnecting());
    assert_eq!(t.value(), b"idle too long, bye\r\n");
    // The hook is kept: a new period can expire again.
    idle.set_timeout_on(mr.reactor(), t.transport(), Some(secs(1)));
    assert!(!idle.expired());
    mr.advance(secs(1));
    assert_eq!(ran.get(), 2);
}

#[test]
fn idle_timeout_hook_can_rearm_the_timer() {
    // A keep-alive: on the first expiry send a ping and give the peer one more period; on the
    // second, give up.
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let pinged = Rc::new(Cell::new(false));
    let p = pinged.clone();
    let idle = IdleTimeout::new().on_expiry(move |r, transport, timer| {
        if p.replace(true) {
            transport.abort_connection();
        } else {
            transport.write(b"PING\r\n");
            timer.set_timeout_on(r, transport, Some(secs(5)));
        }
    });
    idle.set_timeout_on(mr.reactor(), t.transport(), Some(secs(10)));
    mr.advance(secs(10));
    assert_eq!(t.value(), b"PING\r\n");
    assert!(!t.aborted());
    assert!(idle.active() && !idle.expired());
    assert_eq!(idle.timeout(), Some(secs(5)));
    mr.advance(secs(5));
    assert!(t.aborted());
    assert!(mr.reactor().delayed_calls().is_empty());
    // Dropping the timer frees its hook: nothing keeps it alive.
    let weak = Rc::downgrade(&pinged);
    drop((idle, pinged));
    assert!(weak.upgrade().is_none(), "the hook leaked");
}

// -------------------------------------------------------------------------- TimeoutFactory

#[test]
fn timeout_factory_counts_reads_and_writes_as_traffic() {
    let (user, logs) = recording();
    let f = TimeoutFactory::new(user, secs(30)).unwrap();
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let mut p = f.build_protocol(&Address::memory("peer")).unwrap();
    t.connect(&mut *p);
    let log = logs.borrow()[0].clone();
    // Reads reset the timer.
    for _ in 0..3 {
        mr.advance(secs(20));
        t.receive(&mut *p, b"ping");
    }
    // Writes reset it too (through the transport the wrapped protocol got).
    let inner_t = log.transport.borrow().clone().unwrap();
    assert_ne!(
        &inner_t,
        t.transport(),
        "the protocol should see a wrapping transport"
    );
    for _ in 0..3 {
        mr.advance(secs(20));
        inner_t.write(b"pong");
        inner_t.write_shared(Rc::from(&b"!"[..]));
    }
    assert!(!t.aborted());
    assert_eq!(t.value(), b"pong!pong!pong!");
    assert_eq!(&log.data.borrow()[..], b"pingpingping");
    mr.advance(secs(30));
    assert!(t.aborted());
    // Bytes arriving after the abort are not delivered.
    t.receive(&mut *p, b"late");
    assert_eq!(&log.data.borrow()[..], b"pingpingping");
    t.lose(&mut *p, Reason::ConnectionAborted);
    assert!(matches!(*log.lost.borrow(), Some(Reason::TimedOut(_))));
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn timeout_factory_over_a_connected_pair() {
    let mr = MemoryReactor::new().unwrap();
    let (user, logs) = recording();
    let server = TimeoutFactory::new(user, secs(60)).unwrap();
    let (client_f, client_logs) = recording();
    let pump = connected_pair(mr.reactor(), &server, &client_f).unwrap();
    pump.flush();
    mr.advance(secs(59));
    pump.client_transport().write(b"hello");
    pump.flush();
    mr.advance(secs(59));
    pump.flush();
    assert!(!pump.closed());
    mr.advance(secs(1));
    pump.flush();
    assert!(pump.closed());
    let s = logs.borrow()[0].clone();
    assert_eq!(&s.data.borrow()[..], b"hello");
    assert!(matches!(*s.lost.borrow(), Some(Reason::TimedOut(_))));
    assert!(client_logs.borrow()[0].lost.borrow().is_some());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn timeout_closed_connection_leaves_no_timer() {
    let mr = MemoryReactor::new().unwrap();
    let server = TimeoutFactory::new(quiet(), secs(60)).unwrap();
    let pump = connected_pair(mr.reactor(), &server, &quiet()).unwrap();
    assert_eq!(mr.reactor().delayed_calls().len(), 1);
    pump.client_transport().lose_connection();
    pump.flush();
    assert!(pump.closed());
    assert!(
        mr.reactor().delayed_calls().is_empty(),
        "the idle timer outlived its connection"
    );
}

#[test]
fn zero_settings_are_refused() {
    let zero = |e: PolicyError| matches!(e, PolicyError::Zero { .. });
    assert!(zero(
        TimeoutFactory::new(quiet(), Duration::ZERO).unwrap_err()
    ));
    assert!(zero(
        TimeoutProtocol::new(Box::new(Quiet), Duration::ZERO).unwrap_err()
    ));
    assert!(zero(
        LimitTotalConnectionsFactory::new(quiet(), 0).unwrap_err()
    ));
    assert!(zero(LimitConnectionsByPeer::new(quiet(), 0).unwrap_err()));
    assert!(zero(
        ThrottlingFactory::new(quiet()).read_limit(0).unwrap_err()
    ));
    assert!(zero(
        ThrottlingFactory::new(quiet()).write_limit(0).unwrap_err()
    ));
    let e = ThrottlingFactory::new(quiet())
        .max_connections(0)
        .unwrap_err();
    assert_eq!(e.to_string(), "max connections must be greater than zero");
}

// ---------------------------------------------------------------------- connection limits

/// Captures what tracing logs while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn total_limit_refuses_and_frees_slots() {
    let mr = MemoryReactor::new().unwrap();
    let (user, logs) = recording();
    let server = LimitTotalConnectionsFactory::new(user, 2).unwrap();
    let a = connected_pair(mr.reactor(), &server, &quiet()).unwrap();
    let b = connected_pair(mr.reactor(), &server, &quiet()).unwrap();
    let log = logged(|| {
        assert!(connected_pair(mr.reactor(), &server, &quiet()).is_none());
    });
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("connection refused: the limit of 2 connections is reached"),
        "{log}"
    );
    assert!(
        log.contains("memory:client"),
        "the peer is not named: {log}"
    );
    assert_eq!(
        server.wrapped().protocols_built(),
        2,
        "a refused protocol was built"
    );
    assert_eq!((server.connections(), server.refused()), (2, 1));
    // One ends: a slot is free again.
    a.server_transport().lose_connection();
    a.flush();
    assert_eq!(server.connections(), 1);
    let c = connected_pair(mr.reactor(), &server, &quiet()).unwrap();
    assert_eq!(server.connections(), 2);
    // The refused connection never reached the user's protocols.
    assert_eq!(logs.borrow().len(), 3);
    drop((b, c));
}

#[test]
fn per_peer_limit() {
    let mr = MemoryReactor::new().unwrap();
    let server = LimitConnectionsByPeer::new(quiet(), 2).unwrap();
    let pair = |who: &str| {
        connected_pair_with(
            mr.reactor(),
            &server,
            &quiet(),
            Address::memory("server"),
            Address::memory(who),
        )
    };
    let a1 = pair("alice").unwrap();
    let a2 = pair("alice").unwrap();
    let log = logged(|| assert!(pair("alice").is_none()));
    assert!(
        log.contains("connection refused: this peer has 2 connections open"),
        "{log}"
    );
    let b1 = pair("bob").unwrap();
    assert_eq!(server.peers(), 2);
    assert_eq!(server.connections_from(&Address::memory("alice")), 2);
    a1.client_transport().lose_connection();
    a1.flush();
    assert_eq!(server.connections_from(&Address::memory("alice")), 1);
    let a3 = pair("alice").unwrap();
    // The table forgets peers with nothing open.
    b1.client_transport().lose_connection();
    b1.flush();
    assert_eq!(server.peers(), 1);
    assert_eq!(server.refused(), 1);
    drop((a2, a3));

    // For TCP, the host counts, not the port.
    let f = LimitConnectionsByPeer::new(quiet(), 1).unwrap();
    let tcp = |s: &str| Address::from(s.parse::<std::net::SocketAddr>().unwrap());
    let p = f.build_protocol(&tcp("[::1]:1000"));
    assert!(p.is_some());
    assert!(f.build_protocol(&tcp("[::1]:1001")).is_none());
    assert!(f.build_protocol(&tcp("127.0.0.1:1000")).is_some());
}

// ------------------------------------------------------------------------------ throttling

#[test]
fn read_throttle_pauses_and_resumes_on_the_fake_clock() {
    let f = ThrottlingFactory::new(quiet()).read_limit(1_000).unwrap();
    let mr = MemoryReactor::new().unwrap();
    let t1 = StringTransport::on(mr.reactor());
    let t2 = StringTransport::on(mr.reactor());
    let mut p1 = f.build_protocol(&Address::memory("1")).unwrap();
    let mut p2 = f.build_protocol(&Address::memory("2")).unwrap();
    t1.connect(&mut *p1);
    t2.connect(&mut *p2);
    // Under the limit: nothing happens.
    t1.receive(&mut *p1, &[0; 500]);
    t2.receive(&mut *p2, &[0; 500]);
    mr.advance(secs(1));
    assert!(!t1.reading_paused() && !f.reads_throttled());
    // 4,000 bytes in a second, over both: both pause for 4000/1000 - 1 = 3 s.
    t1.receive(&mut *p1, &[0; 3_000]);
    t2.receive(&mut *p2, &[0; 1_000]);
    mr.advance(secs(1));
    assert!(t1.reading_paused() && t2.reading_paused());
    assert!(f.reads_throttled());
    assert_eq!(f.read_throttles(), 1);
    // A connection made while throttled starts paused.
    let t3 = StringTransport::on(mr.reactor());
    let mut p3 = f.build_protocol(&Address::memory("3")).unwrap();
    t3.connect(&mut *p3);
    assert!(t3.reading_paused());
    mr.advance(Duration::from_millis(2_999));
    assert!(t1.reading_paused());
    mr.advance(Duration::from_millis(1));
    assert!(!t1.reading_paused() && !t2.reading_paused() && !t3.reading_paused());
    assert!(!f.reads_throttled());
    // Everything closes: no timer is left.
    t1.lose(&mut *p1, Reason::ConnectionDone);
    t2.lose(&mut *p2, Reason::ConnectionDone);
    assert!(!mr.reactor().delayed_calls().is_empty());
    t3.lose(&mut *p3, Reason::ConnectionDone);
    assert_eq!(f.connections(), 0);
    assert!(
        mr.reactor().delayed_calls().is_empty(),
        "throttle timers outlived the connections"
    );
}

/// A protocol that pauses its own reading on its first data.
struct SelfPausing(Rc<RefCell<Option<Transport>>>);
impl Protocol for SelfPausing {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.0.borrow_mut() = Some(cx.transport().clone());
    }
    fn data_received(&mut self, cx: &mut Context<'_>, _: &[u8]) {
        cx.transport().pause_producing();
    }
}

#[test]
fn the_protocols_own_pause_survives_the_throttle() {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let f = ThrottlingFactory::new(Factory::with_state((), move |_, _| SelfPausing(s.clone())))
        .read_limit(10)
        .unwrap();
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let mut p = f.build_protocol(&Address::memory("x")).unwrap();
    t.connect(&mut *p);
    t.receive(&mut *p, &[0; 100]); // pauses itself, and is over the limit
    assert!(t.reading_paused());
    mr.advance(secs(1)); // throttled for 9 s
    mr.advance(secs(9)); // throttle lifted: the protocol's own pause stands
    assert!(!f.reads_throttled());
    assert!(
        t.reading_paused(),
        "the throttle resumed a protocol that paused itself"
    );
    let inner = slot.borrow().clone().unwrap();
    inner.resume_producing();
    assert!(!t.reading_paused());
    // And the other way round: resuming while throttled does not lift the throttle.
    t.receive(&mut *p, &[0; 100]);
    mr.advance(secs(1));
    assert!(f.reads_throttled());
    inner.resume_producing();
    assert!(
        t.reading_paused(),
        "the protocol's resume lifted the throttle"
    );
    t.lose(&mut *p, Reason::ConnectionDone);
    assert!(mr.reactor().delayed_calls().is_empty());
}

/// A producer that records its calls.
#[derive(Default)]
struct Prod {
    calls: RefCell<Vec<&'static str>>,
}
impl Producer for Prod {
    fn pause_producing(&self) {
        self.calls.borrow_mut().push("pause");
    }
    fn resume_producing(&self) {
        self.calls.borrow_mut().push("resume");
    }
    fn stop_producing(&self) {
        self.calls.borrow_mut().push("stop");
    }
}

#[test]
fn write_throttle_pauses_the_streaming_producer() {
    let (user, logs) = recording();
    let f = ThrottlingFactory::new(user).write_limit(1_000).unwrap();
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let mut p = f.build_protocol(&Address::memory("x")).unwrap();
    t.connect(&mut *p);
    let inner_t = logs.borrow()[0].transport.borrow().clone().unwrap();
    let prod = Rc::new(Prod::default());
    inner_t.register_producer(prod.clone(), true).unwrap();
    assert!(inner_t.register_producer(prod.clone(), true).is_err());
    inner_t.write(&[1; 1_500]);
    inner_t.write_sequence(&[&[2; 250], &[3; 250]]);
    assert_eq!(t.value().len(), 2_000, "writes are passed on, only counted");
    mr.advance(secs(1)); // 2,000 bytes: paused for 1 s
    assert!(f.writes_throttled());
    assert_eq!(*prod.calls.borrow(), ["pause"]);
    // The transport's buffer pauses it too, and lets go while the throttle holds: still
    // paused; the throttle lifts while the buffer holds: still paused.
    let (registered, streaming) = t.producer().unwrap();
    assert!(streaming);
    registered.pause_producing();
    registered.resume_producing();
    assert_eq!(*prod.calls.borrow(), ["pause"]);
    registered.pause_producing();
    mr.advance(secs(1));
    assert!(!f.writes_throttled());
    assert_eq!(*prod.calls.borrow(), ["pause"]);
    registered.resume_producing();
    assert_eq!(*prod.calls.borrow(), ["pause", "resume"]);
    inner_t.unregister_producer();
    assert!(t.producer().is_none());
    t.lose(&mut *p, Reason::ConnectionDone);
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn write_throttle_holds_back_a_pull_producer() {
    let (user, logs) = recording();
    let f = ThrottlingFactory::new(user).write_limit(100).unwrap();
    let t = StringTransport::new().unwrap();
    let mr = t.memory_reactor().unwrap();
    let mut p = f.build_protocol(&Address::memory("x")).unwrap();
    t.connect(&mut *p);
    let inner_t = logs.borrow()[0].transport.borrow().clone().unwrap();
    inner_t.write(&[0; 300]);
    mr.advance(secs(1)); // paused for 2 s
    let prod = Rc::new(Prod::default());
    inner_t.register_producer(prod.clone(), false).unwrap();
    let (registered, streaming) = t.producer().unwrap();
    assert!(!streaming);
    registered.resume_producing(); // the transport asks for more: held back
    assert!(prod.calls.borrow().is_empty());
    mr.advance(secs(2));
    assert_eq!(
        *prod.calls.borrow(),
        ["resume"],
        "the held request was not passed on"
    );
    registered.resume_producing();
    assert_eq!(*prod.calls.borrow(), ["resume", "resume"]);
    t.lose(&mut *p, Reason::ConnectionDone);
}

#[test]
fn throttling_max_connections() {
    let mr = MemoryReactor::new().unwrap();
    let f = ThrottlingFactory::new(quiet()).max_connections(1).unwrap();
    let a = connected_pair(mr.reactor(), &f, &quiet()).unwrap();
    let log = logged(|| assert!(connected_pair(mr.reactor(), &f, &quiet()).is_none()));
    assert!(log.contains("connection refused"), "{log}");
    assert_eq!(f.refused(), 1);
    a.client_transport().lose_connection();
    a.flush();
    assert_eq!(f.connections(), 0);
    // A protocol built and dropped without connecting gives its slot back.
    let p = f.build_protocol(&Address::memory("x"));
    assert!(p.is_some());
    assert!(f.build_protocol(&Address::memory("y")).is_none());
    drop(p);
    assert!(f.build_protocol(&Address::memory("y")).is_some());
}

#[test]
fn throttled_pair_still_delivers_everything() {
    // 10,000 bytes through a 1,000 B/s read limit on the pump: all arrive, in order.
    let mr = MemoryReactor::new().unwrap();
    let (user, logs) = recording();
    let server = ThrottlingFactory::new(user).read_limit(1_000).unwrap();
    let pump = connected_pair(mr.reactor(), &server, &quiet()).unwrap();
    pump.set_chunk_size(Some(500));
    let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    pump.client_transport().write(&sent);
    let mut seconds = 0;
    while logs.borrow()[0].data.borrow().len() < sent.len() {
        pump.flush();
        mr.advance(secs(1));
        seconds += 1;
        assert!(seconds < 100, "stalled");
    }
    assert_eq!(*logs.borrow()[0].data.borrow(), sent);
    assert!(server.read_throttles() >= 1);
    pump.client_transport().lose_connection();
    pump.flush();
    mr.advance(secs(20));
    pump.flush();
    assert!(pump.closed());
    assert!(mr.reactor().delayed_calls().is_empty());
}

// ------------------------------------------------------------------------------- over TCP

/// A client that sends `payload` on connect, and records what it reads and how it ended.
struct Sender {
    payload: Vec<u8>,
    log: Rc<Log>,
}
impl Protocol for Sender {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.log.made.set(self.log.made.get() + 1);
        if !self.payload.is_empty() {
            cx.transport().write(&self.payload);
            cx.transport().lose_connection();
        }
    }
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.log.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.log.lost.borrow_mut() = Some(reason);
    }
}

fn sender(payload: Vec<u8>, log: Rc<Log>) -> Factory {
    Factory::for_protocol(move || Sender {
        payload: payload.clone(),
        log: log.clone(),
    })
}

struct Greeter(Rc<Log>);
impl Protocol for Greeter {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.0.made.set(self.0.made.get() + 1);
        *self.0.transport.borrow_mut() = Some(cx.transport().clone());
        cx.transport().write(b"hi");
    }
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.0.lost.borrow_mut() = Some(reason);
        self.0.transport.borrow_mut().take();
    }
}

reactor_test! {
    fn tcp_idle_timeout(reactor) {
        let (user, logs) = recording();
        let server = TimeoutFactory::new(user, Duration::from_millis(200)).unwrap();
        let port = reactor.listen_tcp("127.0.0.1:0", server).unwrap();
        let client = Rc::new(Log::default());
        reactor.connect_tcp("127.0.0.1", port.port(), sender(Vec::new(), client.clone()), secs(10));
        run_until(reactor, secs(30), || client.lost.borrow().is_some());
        let s = logs.borrow()[0].clone();
        run_until(reactor, secs(10), || s.lost.borrow().is_some());
        assert!(matches!(*s.lost.borrow(), Some(Reason::TimedOut(_))), "{:?}", s.lost.borrow());
        port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
    }
}

reactor_test! {
    fn tcp_connection_limits(reactor) {
        let server_log = Rc::new(Log::default());
        let sl = server_log.clone();
        let total = LimitTotalConnectionsFactory::new(
            Factory::for_protocol(move || Greeter(sl.clone())),
            5,
        )
        .unwrap();
        let server = Rc::new(LimitConnectionsByPeer::new(total, 1).unwrap());
        let port = reactor.listen_tcp("127.0.0.1:0", server.clone()).unwrap();
        let connect = |log: &Rc<Log>| {
            reactor.connect_tcp("127.0.0.1", port.port(), sender(Vec::new(), log.clone()), secs(10));
        };
        let first = Rc::new(Log::default());
        connect(&first);
        run_until(reactor, secs(30), || first.data.borrow().len() == 2);
        // A second connection from the same address is closed at once, unserved.
        let second = Rc::new(Log::default());
        connect(&second);
        run_until(reactor, secs(30), || second.lost.borrow().is_some());
        assert!(second.data.borrow().is_empty(), "a refused connection was served");
        assert_eq!(server_log.made.get(), 1);
        assert_eq!(server.refused(), 1);
        assert_eq!(server.wrapped().connections(), 1);
        // The server ends the first: its slot comes back, and a third is served.
        let t = server_log.transport.borrow().clone().unwrap();
        t.lose_connection();
        drop(t);
        run_until(reactor, secs(30), || first.lost.borrow().is_some() && server.peers() == 0);
        assert_eq!(server.wrapped().connections(), 0);
        let third = Rc::new(Log::default());
        connect(&third);
        run_until(reactor, secs(30), || third.data.borrow().len() == 2);
        assert_eq!(server_log.made.get(), 2);
        let t = server_log.transport.borrow().clone().unwrap();
        t.lose_connection();
        drop(t);
        run_until(reactor, secs(30), || third.lost.borrow().is_some());
        port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
    }
}

reactor_test! {
    fn tcp_read_throttle(reactor) {
        let (user, logs) = recording();
        let server = Rc::new(ThrottlingFactory::new(user).read_limit(20_000).unwrap());
        let port = reactor.listen_tcp("127.0.0.1:0", server.clone()).unwrap();
        let (client_f, clients) = recording();
        reactor.connect_tcp("127.0.0.1", port.port(), client_f, secs(10));
        run_until(reactor, secs(30), || {
            clients.borrow().first().is_some_and(|c| c.transport.borrow().is_some())
        });
        let client_t = clients.borrow()[0].transport.borrow().clone().unwrap();
        let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
        client_t.write(&payload);
        // All of it arrives at once; the check, a second after the connection, finds three
        // times the limit and pauses reading for two seconds.
        run_until(reactor, secs(30), || {
            logs.borrow().first().is_some_and(|l| l.data.borrow().len() == payload.len())
        });
        let s = logs.borrow()[0].clone();
        run_until(reactor, secs(30), || server.reads_throttled());
        // While throttled, nothing more is read.
        client_t.write(b"0123456789");
        run_until(reactor, secs(30), || {
            if server.reads_throttled() {
                assert_eq!(s.data.borrow().len(), payload.len(), "read while throttled");
                false
            } else {
                true
            }
        });
        run_until(reactor, secs(30), || s.data.borrow().len() == payload.len() + 10);
        assert_eq!(&s.data.borrow()[..payload.len()], &payload[..]);
        assert!(server.read_throttles() >= 1);
        client_t.lose_connection();
        drop(client_t);
        run_until(reactor, secs(30), || s.lost.borrow().is_some());
        assert_eq!(server.connections(), 0);
        port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
    }
}

/// A streaming producer that only records what its consumer tells it.
#[derive(Default)]
struct Streamer {
    paused: Cell<bool>,
    pauses: Cell<u32>,
    resumes: Cell<u32>,
}
impl Producer for Streamer {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.resumes.set(self.resumes.get() + 1);
    }
}

reactor_test! {
    fn tcp_write_throttle(reactor) {
        let (user, logs) = recording();
        let server = Rc::new(ThrottlingFactory::new(user).write_limit(100_000).unwrap());
        let port = reactor.listen_tcp("127.0.0.1:0", server.clone()).unwrap();
        let (client_f, clients) = recording();
        reactor.connect_tcp("127.0.0.1", port.port(), client_f, secs(10));
        run_until(reactor, secs(30), || {
            logs.borrow().first().is_some_and(|l| l.transport.borrow().is_some())
        });
        let t = logs.borrow()[0].transport.borrow().clone().unwrap();
        let streamer = Rc::new(Streamer::default());
        t.register_producer(streamer.clone(), true).unwrap();
        // The producer writes 16 KiB every 50 ms (about 320 KB/s) while not paused; the
        // limit is 100 KB/s: the check pauses it, for about two seconds, then resumes it.
        let mut last = std::time::Instant::now() - Duration::from_secs(1);
        let mut written = 0usize;
        run_until(reactor, secs(60), || {
            if !streamer.paused.get() && last.elapsed() >= Duration::from_millis(50) {
                assert!(!server.writes_throttled(), "a throttled producer was not paused");
                t.write(&[7; 16 * 1024]);
                written += 16 * 1024;
                last = std::time::Instant::now();
            }
            streamer.resumes.get() >= 1 && server.write_throttles() >= 1
        });
        assert!(streamer.pauses.get() >= 1);
        t.unregister_producer();
        t.lose_connection();
        drop(t);
        let c = clients.borrow()[0].clone();
        run_until(reactor, secs(30), || c.lost.borrow().is_some());
        assert_eq!(c.data.borrow().len(), written, "bytes were lost");
        assert_eq!(server.connections(), 0);
        port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
    }
}
