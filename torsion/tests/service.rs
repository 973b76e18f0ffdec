//! ClientService: exact retry delays on the fake clock, when_connected waiters, stop in every
//! state, restart; and a service over TCP on every backend.

use std::cell::Cell;
use std::f64::consts::E;
use std::rc::Rc;
use std::time::Duration;

use torsion::endpoints::{ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint};
use torsion::service::{Backoff, ClientService, ServiceStopped};
use torsion::testing::{run_until, IoPump, MemoryReactor};
use torsion::{
    reactor_test, ConnectError, Context, Deferred, Factory, Protocol, Reactor, Transport,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn memory() -> (std::sync::MutexGuard<'static, ()>, MemoryReactor) {
    let serial = torsion::testing::serial();
    (serial, MemoryReactor::new().unwrap())
}

#[derive(Default)]
struct Client {
    id: u32,
    got: Vec<u8>,
    lost: u32,
}

impl Protocol for Client {
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, _: torsion::Reason) {
        self.lost += 1;
    }
}

struct Server;
impl Protocol for Server {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"welcome");
    }
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

fn server() -> Factory {
    Factory::for_protocol(|| Server)
}

/// A service whose protocols are numbered 1, 2, ... as they are built.
fn service(mr: &MemoryReactor, backoff: Backoff) -> ClientService<Client> {
    let n = Rc::new(Cell::new(0));
    ClientService::with_backoff(
        mr.reactor(),
        TcpClientEndpoint::new(mr, "10.0.0.1", 7),
        move |_| {
            n.set(n.get() + 1);
            Client {
                id: n.get(),
                ..Client::default()
            }
        },
        backoff,
    )
}

fn attempts(mr: &MemoryReactor) -> usize {
    mr.tcp_clients().len()
}

/// Plays the latest attempt: connected to `server()`.
fn accept(mr: &MemoryReactor) -> IoPump {
    let last = mr.tcp_clients().pop().unwrap();
    last.accept(&server()).unwrap()
}

fn fail_latest(mr: &MemoryReactor) {
    assert!(mr.tcp_clients().pop().unwrap().fail(ConnectError::Refused));
}

/// Advances to just before `delay`, checks no new attempt, then to `delay`, checks one.
fn expect_retry_after(mr: &MemoryReactor, delay: Duration) {
    let before = attempts(mr);
    mr.advance(delay - Duration::from_micros(1));
    assert_eq!(attempts(mr), before, "no retry before {delay:?}");
    mr.advance(Duration::from_micros(1));
    assert_eq!(attempts(mr), before + 1, "a retry at {delay:?}");
}

fn failed<T: 'static>(d: Deferred<T>) -> torsion::Failure {
    match d.try_result() {
        Ok(Err(f)) => f,
        Ok(Ok(_)) => panic!("succeeded"),
        Err(_) => panic!("not fired"),
    }
}

#[test]
fn retry_delays_grow_by_e_from_one_second() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    assert_eq!(attempts(&mr), 1, "start connects at once");
    for n in 1..=6 {
        fail_latest(&mr);
        assert_eq!(svc.failures(), n);
        let delay = Duration::from_secs_f64(E.powi(n as i32));
        expect_retry_after(&mr, delay);
    }
    // Capped at an hour: e^9 s is over it.
    let b = Backoff::default();
    assert_eq!(b.delay(8), Duration::from_secs_f64(E.powi(8)));
    assert_eq!(b.delay(9), secs(3600));
    assert_eq!(b.delay(u32::MAX), secs(3600));
    let _ = svc.stop();
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn capped_delays_and_reset_after_a_connection() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::new(secs(1), 2.0, secs(5)).unwrap());
    svc.start();
    fail_latest(&mr);
    expect_retry_after(&mr, secs(2));
    fail_latest(&mr);
    expect_retry_after(&mr, secs(4));
    fail_latest(&mr);
    expect_retry_after(&mr, secs(5));
    fail_latest(&mr);
    expect_retry_after(&mr, secs(5));
    let pump = accept(&mr);
    assert_eq!(svc.failures(), 0, "a connection resets the count");
    // The connection is lost: one failure, so the first delay again.
    pump.server_transport().lose_connection();
    pump.flush();
    assert_eq!(svc.failures(), 1);
    assert!(svc.connection().is_none());
    expect_retry_after(&mr, secs(2));
    fail_latest(&mr);
    expect_retry_after(&mr, secs(4));
    let d = svc.stop();
    assert!(d.try_result().unwrap().is_ok());
}

#[test]
fn when_connected_waiters_get_the_connection() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    let early = svc.when_connected(); // before start
    svc.start();
    let during = svc.when_connected();
    assert!(!early.called() && !during.called());
    fail_latest(&mr);
    assert!(!early.called(), "a failure does not fail the waiters");
    mr.advance(Duration::from_secs_f64(E));
    let pump = accept(&mr);
    pump.flush();
    let a = early.try_result().unwrap().unwrap();
    let b = during.try_result().unwrap().unwrap();
    assert!(Rc::ptr_eq(a.protocol(), b.protocol()));
    assert_eq!(a.protocol().borrow().id, 1);
    assert_eq!(a.protocol().borrow().got, b"welcome");
    // Connected: at once, the same one.
    let now = svc.when_connected().try_result().unwrap().unwrap();
    assert_eq!(now.transport(), a.transport());

    // Lost, then back: new waiters get the new connection.
    pump.server_transport().lose_connection();
    pump.flush();
    assert_eq!(a.protocol().borrow().lost, 1);
    let next = svc.when_connected();
    assert!(!next.called());
    mr.advance(Duration::from_secs_f64(E));
    let _pump2 = accept(&mr);
    assert_eq!(
        next.try_result().unwrap().unwrap().protocol().borrow().id,
        2
    );
    let _ = svc.stop();
}

#[test]
fn when_connected_within_fails_after_so_many_failures() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    let d = svc.when_connected_within(Some(2));
    fail_latest(&mr);
    assert!(!d.called());
    mr.advance(Duration::from_secs_f64(E));
    fail_latest(&mr);
    let f = failed(d);
    assert!(matches!(
        f.downcast_ref::<ConnectError>(),
        Some(ConnectError::Refused)
    ));
    assert!(svc.running(), "the service goes on retrying");
    let _ = svc.stop();
}

#[test]
fn stop_while_waiting_cancels_the_retry() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    let waiter = svc.when_connected();
    fail_latest(&mr);
    assert_eq!(mr.reactor().delayed_calls().len(), 1);
    let stopped = svc.stop();
    assert!(stopped.try_result().unwrap().is_ok(), "nothing to wait for");
    assert!(
        mr.reactor().delayed_calls().is_empty(),
        "the retry was cancelled"
    );
    assert!(failed(waiter).check::<ServiceStopped>());
    mr.advance(secs(10_000));
    assert_eq!(attempts(&mr), 1, "no retry after stop");
    assert!(failed(svc.when_connected()).check::<ServiceStopped>());
}

#[test]
fn stop_while_connecting_cancels_the_attempt() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    let waiter = svc.when_connected();
    let client = mr.tcp_clients()[0].clone();
    assert!(client.pending());
    let stopped = svc.stop();
    assert!(!client.pending(), "the attempt was cancelled");
    assert!(stopped.try_result().unwrap().is_ok());
    assert!(failed(waiter).check::<ServiceStopped>());
    assert!(mr.reactor().delayed_calls().is_empty());
    assert!(!svc.running());
}

#[test]
fn stop_while_connected_closes_and_fires_when_down() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    let pump = accept(&mr);
    let c = svc.when_connected().try_result().unwrap().unwrap();
    let stopped = svc.stop();
    assert!(!stopped.called(), "fires once the connection is down");
    assert!(c.transport().disconnecting());
    pump.flush();
    assert!(stopped.try_result().unwrap().is_ok());
    assert_eq!(c.protocol().borrow().lost, 1);
    mr.advance(secs(10_000));
    assert_eq!(attempts(&mr), 1, "no reconnect after stop");
    assert!(
        svc.stop().try_result().unwrap().is_ok(),
        "stop again: at once"
    );
}

#[test]
fn start_while_stopping_reconnects_once_down() {
    let (_s, mr) = memory();
    let svc = service(&mr, Backoff::default());
    svc.start();
    let pump = accept(&mr);
    let stopped = svc.stop();
    svc.start();
    let next = svc.when_connected();
    pump.flush();
    assert!(stopped.try_result().unwrap().is_ok());
    assert_eq!(attempts(&mr), 2, "connects again at once");
    let _pump = accept(&mr);
    assert_eq!(
        next.try_result().unwrap().unwrap().protocol().borrow().id,
        2
    );
    let _ = svc.stop();
}

#[test]
fn bad_backoffs_are_refused() {
    assert!(Backoff::new(secs(1), f64::NAN, secs(5)).is_err());
    assert!(Backoff::new(secs(1), 0.9, secs(5)).is_err());
    assert!(Backoff::new(secs(6), 2.0, secs(5)).is_err());
    let e = Backoff::new(secs(1), 2.0, secs(100_000)).unwrap_err();
    assert!(e.to_string().contains("over a day"), "{e}");
}

/// Closes every connection it gets after sending a line.
struct Kicker(Rc<Cell<u32>>);
impl Protocol for Kicker {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.0.set(self.0.get() + 1);
        cx.transport().write(b"bye");
        cx.transport().lose_connection();
    }
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

fn settle(reactor: &Reactor) {
    run_until(reactor, secs(30), || {
        reactor.descriptor_count() == 0 && reactor.queued_calls() == 0
    });
}

reactor_test! {
    fn service_reconnects_over_tcp(reactor) {
        let served = Rc::new(Cell::new(0));
        let s = served.clone();
        let port = TcpServerEndpoint::new(reactor, 0)
            .interface("127.0.0.1".parse().unwrap())
            .listen(Rc::new(Factory::for_protocol(move || Kicker(s.clone()))))
            .try_result()
            .unwrap()
            .unwrap();
        let backoff = Backoff::new(ms(10), 1.0, ms(10)).unwrap();
        let svc = ClientService::with_backoff(
            reactor,
            TcpClientEndpoint::new(reactor, "127.0.0.1", port.port()),
            |_| Client::default(),
            backoff,
        );
        svc.start();
        // The server kicks each connection: the service keeps coming back.
        run_until(reactor, secs(30), || served.get() >= 3);
        let stopped = svc.stop();
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let _ = stopped.add_callback(move |()| {
            d.set(true);
            Ok(())
        });
        run_until(reactor, secs(30), || done.get());
        assert!(!svc.running());
        port.stop_listening();
        settle(reactor);
    }

    fn service_stop_closes_a_live_tcp_connection(reactor) {
        let port = TcpServerEndpoint::new(reactor, 0)
            .interface("127.0.0.1".parse().unwrap())
            .listen(Rc::new(server()))
            .try_result()
            .unwrap()
            .unwrap();
        let svc = ClientService::new(
            reactor,
            TcpClientEndpoint::new(reactor, "127.0.0.1", port.port()),
            |_| Client::default(),
        );
        svc.start();
        let first = svc.when_connected();
        let got: Rc<std::cell::RefCell<Option<Transport>>> = Rc::default();
        let g = got.clone();
        let _ = first.add_callback(move |c| {
            *g.borrow_mut() = Some(c.transport().clone());
            Ok(())
        });
        run_until(reactor, secs(30), || got.borrow().is_some());
        let c = svc.connection().unwrap();
        run_until(reactor, secs(30), || c.protocol().borrow().got == b"welcome");
        let stopped = svc.stop();
        run_until(reactor, secs(30), || stopped.called());
        assert_eq!(c.protocol().borrow().lost, 1);
        port.stop_listening();
        settle(reactor);
    }
}
