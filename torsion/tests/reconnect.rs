//! ReconnectingClientFactory: the delay sequence, jitter, reset, max_retries and stop_trying on
//! the fake clock (MemoryReactor, testing::Clock), and reconnection over TCP on every backend.

use std::cell::{Cell, RefCell};
use std::f64::consts::E;
use std::rc::Rc;
use std::time::Duration;

use torsion::protocol::reconnect::{ReconnectError, ReconnectingClientFactory, SplitMix64};
use torsion::testing::{run_until, Clock, MemoryReactor, StringTransport};
use torsion::{
    reactor_test, Address, ClientFactory, ConnectError, Connector, Context, Factory, Protocol,
    ReactorTcp, Reason,
};

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

fn quiet() -> Factory {
    Factory::for_protocol(|| Quiet)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Seconds until the pending retry (panics when none is pending).
fn wait_of(mr: &MemoryReactor, f: &ReconnectingClientFactory<Factory>) -> f64 {
    let call = f.pending_retry().expect("a retry is pending");
    (call.time() - mr.reactor().now()).as_secs_f64()
}

/// Plays a failed attempt on the memory reactor's fake connector.
/// Fails the pending attempt of `c` as refused, through the memory reactor's fake connector
/// (which tells the factory).
fn fail(mr: &MemoryReactor, c: &Connector) {
    let attempt = mr
        .tcp_clients()
        .into_iter()
        .find(|t| &t.connector == c)
        .expect("the connector's attempt");
    assert!(
        attempt.fail(ConnectError::Refused),
        "the attempt was pending"
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn setup_on(
    mr: &MemoryReactor,
    f: ReconnectingClientFactory<Factory>,
) -> (Rc<ReconnectingClientFactory<Factory>>, Connector) {
    let f = Rc::new(f);
    let c = mr.connect_tcp_to("example.com", 79, f.clone(), secs(30));
    (f, c)
}

#[test]
fn delay_sequence_without_jitter_is_exact_and_capped() {
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(0.0)
        .unwrap()
        .max_delay(100.0)
        .unwrap();
    let (f, c) = setup_on(&mr, f);
    let expected = [E, E * E, E.powi(3), E.powi(4), 100.0, 100.0, 100.0];
    for (i, want) in expected.iter().enumerate() {
        fail(&mr, &c);
        let got = wait_of(&mr, &f);
        assert!(close(got, *want), "retry {i}: waited {got}, want {want}");
        assert!(close(f.delay(), *want));
        assert_eq!(f.retries(), i as u32 + 1);
        // Not a moment early, then at once.
        mr.advance(Duration::from_secs_f64(got - 0.001));
        assert!(!c.connecting(), "retry {i} came early");
        mr.advance(Duration::from_millis(2));
        assert!(c.connecting(), "retry {i} did not come");
        assert!(f.pending_retry().is_none());
    }
    f.stop_trying();
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn twisted_defaults() {
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(0.0)
        .unwrap();
    assert_eq!(f.delay(), 1.0);
    let (f, c) = setup_on(&mr, f);
    // e^n stays under 3600 up to n = 8 (2981 s); the ninth would be 8103 s: capped.
    for n in 1..=8 {
        fail(&mr, &c);
        assert!(close(wait_of(&mr, &f), E.powi(n)), "retry {n}");
        mr.advance(secs(9000));
    }
    fail(&mr, &c);
    assert!(close(wait_of(&mr, &f), 3600.0));
    f.stop_trying();
}

#[test]
fn jitter_is_a_normal_variate_from_the_source() {
    // u1 = 1 - e^(-1/2) makes sqrt(-2 ln(1 - u1)) = 1; u2 = 0 gives cos = +1, u2 = 1/2 gives -1:
    // the variates are exactly +1 and -1 standard deviations.
    let u1 = 1.0 - (-0.5f64).exp();
    let script = Rc::new(RefCell::new(vec![u1, 0.0, u1, 0.5, u1, 0.25].into_iter()));
    let s = script.clone();
    let j = 0.1;
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(j)
        .unwrap()
        .random_source(move || s.borrow_mut().next().expect("script ran out"));
    let (f, c) = setup_on(&mr, f);
    let d1 = E * (1.0 + j);
    let d2 = d1 * E * (1.0 - j);
    let d3 = d2 * E; // cos(π/2) = 0: no deviation
    for want in [d1, d2, d3] {
        fail(&mr, &c);
        let got = wait_of(&mr, &f);
        assert!(close(got, want), "waited {got}, want {want}");
        mr.advance(secs(100));
        assert!(c.connecting());
    }
    f.stop_trying();
}

#[test]
fn seeded_jitter_is_reproducible_and_near_the_mean() {
    let run = |seed: u64| {
        let mr = MemoryReactor::new().unwrap();
        let mut rng = SplitMix64::new(seed);
        let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
            .random_source(move || rng.next_f64());
        let (f, c) = setup_on(&mr, f);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let before = f.delay();
            fail(&mr, &c);
            let w = wait_of(&mr, &f);
            // Default jitter 0.1196: more than 6 standard deviations is (practically) never.
            let mean = (before * E).min(3600.0);
            assert!((w - mean).abs() < 6.0 * 0.12 * mean, "{w} vs mean {mean}");
            waits.push(w);
            mr.advance(secs(4000));
        }
        f.stop_trying();
        waits
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    let jitter_free: Vec<f64> = (1..=6).map(|n| E.powi(n)).collect();
    assert_ne!(run(42), jitter_free);
}

#[test]
fn a_connection_resets_the_delay() {
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(0.0)
        .unwrap();
    let (f, c) = setup_on(&mr, f);
    fail(&mr, &c);
    mr.advance(secs(10));
    fail(&mr, &c);
    assert_eq!(f.retries(), 2);
    assert!(close(f.delay(), E * E));
    mr.advance(secs(10));
    // The third attempt connects: the factory builds a protocol, played on a string transport.
    let factory = mr.tcp_clients()[0].factory.clone();
    let mut p = factory
        .build_protocol(&Address::memory("server"))
        .expect("a protocol");
    let t = StringTransport::on(mr.reactor());
    t.connect(&mut *p);
    assert_eq!(f.retries(), 0);
    assert_eq!(f.delay(), 1.0);
    assert_eq!(f.connections(), 1);
    t.lose(&mut *p, Reason::ConnectionDone);
    f.client_connection_lost(&c, Reason::ConnectionDone);
    // Back to the first delay.
    assert!(close(wait_of(&mr, &f), E));
    assert_eq!(f.retries(), 1);
    f.stop_trying();
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn max_retries_gives_up() {
    let mr = MemoryReactor::new().unwrap();
    let gave_up = Rc::new(Cell::new(0));
    let g = gave_up.clone();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(0.0)
        .unwrap()
        .max_retries(Some(3))
        .on_give_up(move |c| {
            assert_eq!(c.destination(), "example.com:79");
            g.set(g.get() + 1);
        });
    let (f, c) = setup_on(&mr, f);
    for _ in 0..3 {
        fail(&mr, &c);
        assert!(f.pending_retry().is_some());
        mr.advance(secs(100));
        assert!(c.connecting());
    }
    assert!(!f.gave_up());
    assert_eq!(gave_up.get(), 0);
    fail(&mr, &c);
    assert!(f.pending_retry().is_none(), "a fourth retry was scheduled");
    assert!(f.gave_up());
    assert_eq!(gave_up.get(), 1);
    assert!(mr.reactor().delayed_calls().is_empty());
    mr.advance(secs(100_000));
    assert!(!c.connecting());

    // Zero retries: never retries at all.
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet()).max_retries(Some(0));
    let (f, c) = setup_on(&mr, f);
    fail(&mr, &c);
    assert!(f.pending_retry().is_none());
}

#[test]
fn stop_trying_while_waiting_cancels_the_retry() {
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet());
    let (f, c) = setup_on(&mr, f);
    fail(&mr, &c);
    let call = f.pending_retry().unwrap();
    f.stop_trying();
    assert!(call.cancelled(), "the DelayedCall was not cancelled");
    assert!(mr.reactor().delayed_calls().is_empty());
    mr.advance(secs(100_000));
    assert!(!c.connecting());
    // A later failure or loss does not retry either.
    f.client_connection_failed(&c, ConnectError::Refused);
    f.client_connection_lost(&c, Reason::ConnectionDone);
    assert!(f.pending_retry().is_none());
    assert!(!f.trying());

    // continue_trying starts again at once, from the initial delay.
    f.continue_trying(&c);
    assert!(c.connecting());
    assert!(f.trying());
    assert_eq!(f.retries(), 0);
    fail(&mr, &c);
    assert!(f.pending_retry().is_some());
    f.stop_trying();
}

#[test]
fn stop_trying_while_connecting_cancels_the_attempt() {
    let mr = MemoryReactor::new().unwrap();
    let failed = Rc::new(Cell::new(0));
    let fl = failed.clone();
    let user = quiet().on_client_connection_failed(move |_, _, r| {
        assert!(matches!(r, ConnectError::Cancelled));
        fl.set(fl.get() + 1);
    });
    let f = Rc::new(ReconnectingClientFactory::new(mr.reactor(), user));
    let c = mr.connect_tcp_to("example.com", 79, f.clone(), secs(30));
    assert!(c.connecting());
    f.stop_trying();
    assert!(!c.connecting(), "the attempt was not stopped");
    // The connector reported the cancelled attempt (as the reactor's does): the user's factory
    // heard it once, and no retry follows.
    assert_eq!(failed.get(), 1);
    assert!(f.pending_retry().is_none());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn user_factory_still_hears_everything() {
    let mr = MemoryReactor::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let user = quiet()
        .on_client_connection_failed(move |_, _, r| l1.borrow_mut().push(format!("failed: {r}")))
        .on_client_connection_lost(move |_, _, r| l2.borrow_mut().push(format!("lost: {r}")));
    let f = ReconnectingClientFactory::new(mr.reactor(), user);
    let (f, c) = setup_on(&mr, f);
    fail(&mr, &c);
    f.client_connection_lost(&c, Reason::ConnectionDone);
    assert_eq!(
        *log.borrow(),
        [
            "failed: connection was refused by other side",
            "lost: connection was closed cleanly"
        ]
    );
    assert_eq!(f.wrapped().protocols_built(), 0);
    f.stop_trying();
}

#[test]
fn settings_are_range_checked() {
    let mr = MemoryReactor::new().unwrap();
    let new = || ReconnectingClientFactory::new(mr.reactor(), quiet());
    assert!(matches!(
        new().initial_delay(-1.0).unwrap_err(),
        ReconnectError::Negative {
            setting: "initial_delay",
            ..
        }
    ));
    assert!(matches!(
        new().initial_delay(f64::NAN).unwrap_err(),
        ReconnectError::NotFinite { .. }
    ));
    assert!(matches!(
        new().max_delay(f64::INFINITY).unwrap_err(),
        ReconnectError::NotFinite {
            setting: "max_delay",
            ..
        }
    ));
    assert!(matches!(
        new().max_delay(1e12).unwrap_err(),
        ReconnectError::TooLong { .. }
    ));
    assert_eq!(
        new().factor(0.5).unwrap_err(),
        ReconnectError::FactorBelowOne(0.5)
    );
    assert!(new().factor(f64::NAN).is_err());
    assert!(new().jitter(-0.1).is_err());
    assert_eq!(
        new().jitter(1.5).unwrap_err(),
        ReconnectError::JitterAboveOne(1.5)
    );
    assert!(new().jitter(f64::NAN).is_err());
    let e = new().factor(0.5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "factor must be at least 1 (the delay must not shrink), not 0.5"
    );
    // Edges are accepted.
    assert!(new().factor(1.0).is_ok());
    assert!(new().jitter(0.0).is_ok());
    assert!(new().jitter(1.0).is_ok());
    assert!(new().initial_delay(0.0).is_ok());
}

#[test]
fn nonsense_from_the_random_source_stays_a_sane_delay() {
    let mr = MemoryReactor::new().unwrap();
    let vals = Rc::new(RefCell::new(
        vec![f64::NAN, f64::INFINITY, -3.0, 7.5, 0.999_999_999, 0.0].into_iter(),
    ));
    let f = ReconnectingClientFactory::new(mr.reactor(), quiet())
        .jitter(1.0)
        .unwrap()
        .random_source(move || vals.borrow_mut().next().unwrap_or(0.5));
    let (f, c) = setup_on(&mr, f);
    for _ in 0..4 {
        fail(&mr, &c);
        let w = wait_of(&mr, &f);
        assert!(w.is_finite() && (0.0..=3600.0 * 8.0).contains(&w), "{w}");
        mr.advance(secs(40_000));
    }
    f.stop_trying();
}

#[test]
fn works_on_a_testing_clock() {
    let clock = Clock::new();
    let mr = MemoryReactor::new().unwrap();
    let f = ReconnectingClientFactory::with_clock(Rc::new(clock.clone()), quiet())
        .jitter(0.0)
        .unwrap()
        .initial_delay(2.0)
        .unwrap()
        .factor(3.0)
        .unwrap();
    let (f, c) = setup_on(&mr, f);
    fail(&mr, &c);
    clock.advance(Duration::from_millis(5999));
    assert!(!c.connecting());
    clock.advance(Duration::from_millis(1));
    assert!(c.connecting());
    fail(&mr, &c);
    clock.advance(Duration::from_millis(17_999));
    assert!(!c.connecting());
    clock.advance(Duration::from_millis(1));
    assert!(c.connecting());
    assert!(clock.delayed_calls().is_empty());
}

// ------------------------------------------------------------------------------- over TCP

struct Hello;
impl Protocol for Hello {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"hello");
        cx.transport().lose_connection();
    }
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

#[derive(Default)]
struct ClientLog {
    data: RefCell<Vec<u8>>,
    lost: Cell<u32>,
    failed: Cell<u32>,
}

struct Reader(Rc<ClientLog>);
impl Protocol for Reader {
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, _: Reason) {
        self.0.lost.set(self.0.lost.get() + 1);
    }
}

reactor_test! {
    fn reconnects_once_the_server_comes_up(reactor) {
        // A port nobody listens on (yet).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = Rc::new(ClientLog::default());
        let (l1, l2) = (log.clone(), log.clone());
        let user = Factory::with_state((), move |_, _| Reader(l1.clone()))
            .on_client_connection_failed(move |_, _, _| l2.failed.set(l2.failed.get() + 1));
        let f = Rc::new(
            ReconnectingClientFactory::new(reactor, user)
                .initial_delay(0.01).unwrap()
                .factor(2.0).unwrap()
                .jitter(0.0).unwrap(),
        );
        reactor.connect_tcp("127.0.0.1", port, f.clone(), secs(5));
        run_until(reactor, secs(30), || log.failed.get() >= 3);
        assert!(f.retries() >= 3);
        let listening = reactor
            .listen_tcp(("127.0.0.1", port), Factory::for_protocol(|| Hello))
            .unwrap();
        run_until(reactor, secs(30), || log.lost.get() >= 1);
        assert_eq!(&log.data.borrow()[..5], b"hello");
        assert!(f.connections() >= 1);
        // The server closed: the client reconnects from the initial delay, and is told hello
        // again.
        run_until(reactor, secs(30), || log.lost.get() >= 2);
        f.stop_trying();
        listening.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
        assert!(f.pending_retry().is_none());
    }
}

reactor_test! {
    fn stop_trying_cancels_a_real_attempt(reactor) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = Rc::new(ClientLog::default());
        let (l1, l2) = (log.clone(), log.clone());
        let user = Factory::with_state((), move |_, _| Reader(l1.clone()))
            .on_client_connection_failed(move |_, _, r| {
                assert!(matches!(r, ConnectError::Cancelled), "{r}");
                l2.failed.set(l2.failed.get() + 1);
            });
        let f = Rc::new(ReconnectingClientFactory::new(reactor, user));
        let c = reactor.connect_tcp("127.0.0.1", port, f.clone(), secs(5));
        assert!(c.connecting());
        f.stop_trying();
        assert!(!c.connecting());
        assert_eq!(log.failed.get(), 1);
        assert!(f.pending_retry().is_none());
        // Nothing comes later either.
        reactor.iterate(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(log.failed.get(), 1);
        assert!(reactor.delayed_calls().is_empty());
    }
}
