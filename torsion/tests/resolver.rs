//! Host-name lookups run on the reactor's bounded thread pool, not on a thread each. (Its own
//! test binary, so that no other test's threads are counted.)

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion::testing::run_until;
use torsion::{ConnectError, Context, Factory, Protocol, Reactor};

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

struct Never;
impl Protocol for Never {
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

#[test]
fn many_lookups_use_a_few_threads() {
    const CONNECTS: usize = 3000;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let reactor = Reactor::new().unwrap();
    let before = threads();
    let failures: Rc<RefCell<Vec<ConnectError>>> = Rc::default();
    let mut most = before;
    for _ in 0..CONNECTS {
        let f = failures.clone();
        let factory = Factory::for_protocol(|| Never)
            .on_client_connection_failed(move |_, _, reason| f.borrow_mut().push(reason));
        reactor.connect_tcp("localhost", port, factory, Duration::from_secs(30));
        most = most.max(threads());
    }
    run_until(&reactor, Duration::from_secs(60), || {
        most = most.max(threads());
        failures.borrow().len() == CONNECTS
    });
    let extra = most - before;
    assert!(
        extra <= torsion::defer::DEFAULT_POOL_SIZE,
        "{CONNECTS} lookups used {extra} threads at once"
    );
    // Every attempt got its answer: refused (localhost resolves), never a lookup failure.
    for f in failures.borrow().iter() {
        assert!(matches!(f, ConnectError::Refused), "{f:?}");
    }
}
