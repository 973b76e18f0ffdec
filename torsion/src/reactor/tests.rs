use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;

crate::reactor_test! {
    fn a_million_timers_mostly_cancelled_keep_memory_bounded(reactor) {
        let fired = Rc::new(Cell::new(0u32));
        let mut keep = Vec::new();
        for i in 0..1_000_000u32 {
            let f = fired.clone();
            let call = reactor.call_later(Duration::from_millis(u64::from(i % 7)), move |_| {
                f.set(f.get() + 1)
            });
            if i % 10 == 0 {
                keep.push(call);
            } else {
                call.cancel().unwrap();
            }
            // Stale entries never outnumber live ones by more than 2:1 (plus the floor).
            let heap = reactor.inner.timers.heap_len();
            assert!(heap <= 2 * (keep.len() + 1) + 64, "heap {heap} for {} live", keep.len());
        }
        assert_eq!(reactor.delayed_calls().len(), 100_000);
        while reactor.inner.timers.len() > 0 {
            reactor.iterate(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(fired.get(), 100_000);
        assert!(keep.iter().all(DelayedCall::called));
    }
}

/// Counts reads; says more is waiting (as a transport whose read budget ran out) while `ask`
/// is set. Reads nothing itself.
struct Probe {
    fd: RawFd,
    reads: Cell<u32>,
    ask: Cell<bool>,
}

impl FileDescriptor for Probe {
    fn fileno(&self) -> RawFd {
        self.fd
    }
    fn do_read_event(&self, _: &Reactor, _: &Event) -> Result<Readiness, Reason> {
        self.reads.set(self.reads.get() + 1);
        Ok(if self.ask.get() {
            Readiness::MoreWaiting
        } else {
            Readiness::Drained
        })
    }
}

/// A connected loopback pair: (client, non-blocking server side).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    (c, s)
}

/// Waits until `s` holds at least `n` readable bytes (loopback delivery is quick, but not
/// guaranteed to be done when `write` returns).
fn wait_for_bytes(s: &std::net::TcpStream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 64];
    while s.peek(&mut buf).map_or(0, |k| k) < n {
        assert!(Instant::now() < deadline, "no data after 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn reads_in_one_iteration(reactor: &Reactor, p: &Probe) -> u32 {
    p.reads.set(0);
    reactor.iterate(Some(Duration::from_millis(200))).unwrap();
    p.reads.get()
}

crate::reactor_test! {
    fn a_poller_event_takes_over_a_pending_read_again(reactor) {
        // Asked again in N; in N+1 new data arrives and its read asks again: one read in
        // N+1 and one in N+2 (the request is carried, neither dropped nor doubled).
        use std::io::Write;
        let (mut c, s) = tcp_pair();
        let p = Rc::new(Probe { fd: s.as_raw_fd(), reads: Cell::new(0), ask: Cell::new(true) });
        let reg = reactor.register(p.clone(), Trigger::Edge).unwrap();
        reactor.set_interest(&reg, Interest::READ).unwrap();
        c.write_all(b"a").unwrap();
        wait_for_bytes(&s, 1);
        assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N");
        c.write_all(b"b").unwrap();
        wait_for_bytes(&s, 2);
        assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N+1");
        // Level-triggered backends report the unread bytes again anyway.
        assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N+2");
        p.ask.set(false);
        reactor.deregister(&reg);
    }
}

crate::reactor_test! {
    fn more_waiting_is_read_again_until_drained_and_not_while_paused(reactor) {
        use std::io::Write;
        let (mut c, s) = tcp_pair();
        let p = Rc::new(Probe { fd: s.as_raw_fd(), reads: Cell::new(0), ask: Cell::new(true) });
        let reg = reactor.register(p.clone(), Trigger::Edge).unwrap();
        reactor.set_interest(&reg, Interest::READ).unwrap();
        c.write_all(b"a").unwrap();
        wait_for_bytes(&s, 1);
        assert_eq!(reads_in_one_iteration(reactor, &p), 1);
        assert_eq!(reads_in_one_iteration(reactor, &p), 1, "asked again");
        // Paused: a pending request is dropped, and none is made.
        reactor.set_interest(&reg, Interest::default()).unwrap();
        assert_eq!(reads_in_one_iteration(reactor, &p), 0, "paused");
        assert_eq!(reactor.descriptor_count(), 1, "the registration stays while paused");
        // Resumed: the data still waiting is reported (the registration is re-armed).
        reactor.set_interest(&reg, Interest::READ).unwrap();
        p.ask.set(false);
        assert_eq!(reads_in_one_iteration(reactor, &p), 1, "resumed");
        if reactor.poller_name() == "epoll" {
            assert_eq!(reads_in_one_iteration(reactor, &p), 0, "drained: no new edge");
        }
        reactor.deregister(&reg);
    }
}
