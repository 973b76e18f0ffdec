//! The slow poetry server: sends a poem a few bytes at a time, then closes the connection.
//!
//! The tutorial's `blocking-server/slowpoetry.py` reads `num_bytes` of the poem, sends them,
//! sleeps `delay` seconds, and repeats; when the read comes back empty it closes the socket.
//! The wire behaviour here is the same (the bytes, then FIN, one `delay` after the last chunk),
//! but the server runs on the reactor and serves any number of clients at once. With
//! [`ServeOptions::one_at_a_time`] it serves them one after the other, as the original did.
//!
//! # Implementation notes
//! Chunk `k` of a connection is due at `start + k × delay`, computed from the connection's
//! start rather than from the previous chunk, so a late timer (10,000 clients on a busy machine)
//! never accumulates into a late poem: the next chunk simply comes sooner. One timer per
//! connection is pending at any time. With 10,000 clients the timer heap is about 6% of the
//! server's profile (perf, 10-byte chunks every 0.1 s) and the kernel's TCP send path most of
//! the rest, so one shared tick for all connections would save little and would lose each
//! connection's own phase.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::tcp::ListenOptions;
use torsion::{Context, Factory, ListeningPort, Protocol, Reactor, Reason, Transport};

/// How a poetry server sends its poem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeOptions {
    /// Pause between two chunks (default 0.1 s).
    pub delay: Duration,
    /// Bytes per chunk (default 10; at least 1).
    pub num_bytes: usize,
    /// Send the whole poem at once and close (the tutorial's `fastpoetry.py`).
    pub fast: bool,
    /// Serve one client at a time, the others waiting their turn (the original's behaviour).
    pub one_at_a_time: bool,
    /// Print `Somebody at ADDR wants poetry!` for each client.
    pub verbose: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            delay: Duration::from_millis(100),
            num_bytes: 10,
            fast: false,
            one_at_a_time: false,
            verbose: false,
        }
    }
}

/// State shared by all the connections of one server.
struct Shared {
    poem: Rc<[u8]>,
    opts: ServeOptions,
    /// `one_at_a_time`: a client is being served.
    busy: Cell<bool>,
    /// `one_at_a_time`: clients waiting their turn, first come first served.
    queue: RefCell<VecDeque<(Transport, Rc<Cell<bool>>)>>,
    /// Clients being sent their poem now.
    active: Cell<usize>,
    /// The most clients ever served at once.
    peak: Cell<usize>,
    /// Poems sent completely.
    served: Cell<u64>,
}

impl Shared {
    /// The state of a server of `poem` (`num_bytes` at least 1).
    fn new(poem: Rc<[u8]>, opts: ServeOptions) -> Rc<Shared> {
        let opts = ServeOptions {
            num_bytes: opts.num_bytes.max(1),
            ..opts
        };
        Rc::new(Shared {
            poem,
            opts,
            busy: Cell::new(false),
            queue: RefCell::default(),
            active: Cell::new(0),
            peak: Cell::new(0),
            served: Cell::new(0),
        })
    }

    /// The protocol of one connection.
    fn protocol(self: &Rc<Self>) -> SlowPoetry {
        SlowPoetry {
            shared: self.clone(),
            serving: Rc::default(),
        }
    }

    /// Starts sending the poem to `t`.
    fn start(self: &Rc<Self>, reactor: &Reactor, t: &Transport) {
        if self.opts.verbose {
            // A log line: a closed or full stdout (`| head -1`) must not stop the serving.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "Somebody at {} wants poetry!", t.peer());
        }
        self.active.set(self.active.get() + 1);
        self.peak.set(self.peak.get().max(self.active.get()));
        if self.opts.fast {
            // One copy of the poem however many clients are slow to read it.
            t.write_shared(self.poem.clone());
            self.served.set(self.served.get() + 1);
            t.lose_connection();
            return;
        }
        let sender = Sender {
            transport: t.clone(),
            shared: self.clone(),
            start: reactor.now(),
            offset: 0,
            chunk: 0,
        };
        sender.tick(reactor);
    }

    /// A client being served has gone: serve the next one waiting, if any.
    fn finished(self: &Rc<Self>, reactor: &Reactor) {
        self.active.set(self.active.get() - 1);
        if !self.opts.one_at_a_time {
            return;
        }
        self.busy.set(false);
        loop {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some((t, serving)) if t.connected() => {
                    self.busy.set(true);
                    serving.set(true);
                    return self.start(reactor, &t);
                }
                Some(_) => continue,
                None => return,
            }
        }
    }
}

/// One connection's progress through the poem; moved from timer to timer. Its times are the
/// reactor's ([`Reactor::now`]), so that a test's fake clock drives it.
struct Sender {
    transport: Transport,
    shared: Rc<Shared>,
    start: Instant,
    offset: usize,
    chunk: u32,
}

impl Sender {
    /// Sends the next chunk and schedules the one after; at the end of the poem, closes.
    fn tick(mut self, reactor: &Reactor) {
        let t = &self.transport;
        if !t.connected() {
            return; // the client left: its connection_lost did the bookkeeping
        }
        let poem = &self.shared.poem;
        if self.offset >= poem.len() {
            self.shared.served.set(self.shared.served.get() + 1);
            t.lose_connection();
            return;
        }
        let end = (self.offset + self.shared.opts.num_bytes).min(poem.len());
        t.write(&poem[self.offset..end]);
        self.offset = end;
        self.chunk += 1;
        let due = self.start + self.shared.opts.delay * self.chunk;
        reactor.call_later(due.saturating_duration_since(reactor.now()), move |r| {
            self.tick(r)
        });
    }
}

/// The per-connection protocol. It never reads: the poem goes one way.
struct SlowPoetry {
    shared: Rc<Shared>,
    /// Being served (not waiting in the queue); set by [`Shared::finished`] when a queued
    /// client's turn comes.
    serving: Rc<Cell<bool>>,
}

impl Protocol for SlowPoetry {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        let s = &self.shared;
        if s.opts.one_at_a_time && s.busy.replace(true) {
            s.queue
                .borrow_mut()
                .push_back((t.clone(), self.serving.clone()));
            return;
        }
        self.serving.set(true);
        s.start(cx.reactor(), t);
    }

    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}

    fn connection_lost(&mut self, cx: &mut Context<'_>, _: Reason) {
        if self.serving.get() {
            self.shared.finished(cx.reactor());
        }
        // A client that left while queued is skipped when its turn comes.
    }
}

/// A running poetry server (Twisted's listening port plus its factory's counters).
#[derive(Clone)]
pub struct PoetryServer {
    port: ListeningPort,
    shared: Rc<Shared>,
}

impl std::fmt::Debug for PoetryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoetryServer")
            .field("port", &self.port.port())
            .field("poem_bytes", &self.shared.poem.len())
            .field("opts", &self.shared.opts)
            .finish()
    }
}

/// The accept queue asked for; the kernel caps it at `net.core.somaxconn`. Large, so that
/// 10,000 clients connecting at once are not dropped and made to retry their SYN a second later.
const BACKLOG: i32 = 16_384;

impl PoetryServer {
    /// Serves `poem` on `addr` (port 0 picks a free port) with `opts`.
    ///
    /// # Errors
    /// The listening socket's error (address in use, bad address).
    ///
    /// # Examples
    /// ```
    /// use poetry::server::{PoetryServer, ServeOptions};
    /// use torsion::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let server = PoetryServer::listen(&reactor, "127.0.0.1:0", &b"A poem.\n"[..], ServeOptions::default())?;
    /// assert_ne!(server.port(), 0);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn listen(
        reactor: &Reactor,
        addr: impl ToSocketAddrs,
        poem: impl Into<Rc<[u8]>>,
        opts: ServeOptions,
    ) -> Result<PoetryServer, torsion::Error> {
        let shared = Shared::new(poem.into(), opts);
        let s = shared.clone();
        let factory = Factory::for_protocol(move || s.protocol());
        let listen = ListenOptions {
            backlog: BACKLOG,
            ..ListenOptions::default()
        };
        let port = reactor.listen_tcp_with(addr, factory, listen)?;
        Ok(PoetryServer { port, shared })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The listening port.
    pub fn listening_port(&self) -> &ListeningPort {
        &self.port
    }

    /// Clients whose poem was sent completely.
    pub fn served(&self) -> u64 {
        self.shared.served.get()
    }

    /// Clients being sent their poem right now.
    pub fn active(&self) -> usize {
        self.shared.active.get()
    }

    /// The most clients that were ever being sent their poem at once.
    pub fn peak(&self) -> usize {
        self.shared.peak.get()
    }

    /// Stops listening; clients being served get the rest of their poem.
    pub fn stop_listening(&self) {
        self.port.stop_listening();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use torsion::testing::{MemoryReactor, StringTransport};
    use torsion::Factory;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn opts(delay_ms: u64, num_bytes: usize) -> ServeOptions {
        ServeOptions {
            delay: ms(delay_ms),
            num_bytes,
            ..ServeOptions::default()
        }
    }

    /// A server's state and `n` clients on string transports, all on one memory reactor (a
    /// fake clock): no socket, no sleep.
    struct Bench {
        mr: MemoryReactor,
        shared: Rc<Shared>,
        clients: Vec<(StringTransport, SlowPoetry)>,
    }

    impl Bench {
        fn new(poem: &'static [u8], opts: ServeOptions, n: usize) -> Bench {
            let mr = MemoryReactor::new().unwrap();
            let shared = Shared::new(poem.into(), opts);
            let clients = (0..n)
                .map(|_| (StringTransport::on(mr.reactor()), shared.protocol()))
                .collect();
            Bench {
                mr,
                shared,
                clients,
            }
        }

        /// Client `i` connects.
        fn connect(&mut self, i: usize) {
            let (t, p) = &mut self.clients[i];
            t.connect(p);
        }

        /// What client `i` was sent since the last look.
        fn take(&self, i: usize) -> Vec<u8> {
            self.clients[i].0.take()
        }

        /// The server asked to close client `i`'s connection.
        fn closing(&self, i: usize) -> bool {
            self.clients[i].0.disconnecting()
        }

        /// Client `i`'s connection ends (the close the server asked for, or the client
        /// hanging up).
        fn lose(&mut self, i: usize, reason: Reason) {
            let (t, p) = &mut self.clients[i];
            t.lose(p, reason);
        }

        fn counts(&self) -> (u64, usize, usize) {
            let s = &self.shared;
            (s.served.get(), s.active.get(), s.peak.get())
        }
    }

    const POEM: &[u8] = b"0123456789abcdefghijABCDEFGHIJklmno";

    #[test]
    fn sends_num_bytes_every_delay_then_closes_one_delay_later() {
        let mut b = Bench::new(POEM, opts(30, 10), 1);
        b.connect(0);
        assert_eq!(b.take(0), &POEM[..10], "the first chunk at once");
        for k in 1..4 {
            b.mr.advance(ms(29));
            assert_eq!(b.take(0), b"", "chunk {k} is not early");
            b.mr.advance(ms(1));
            assert_eq!(b.take(0), &POEM[10 * k..(10 * k + 10).min(POEM.len())]);
        }
        // The last chunk went out at 90 ms; the close comes one delay later.
        b.mr.advance(ms(29));
        assert!(!b.closing(0));
        b.mr.advance(ms(1));
        assert!(b.closing(0));
        assert_eq!(b.take(0), b"");
        assert_eq!(b.counts(), (1, 1, 1));
        assert!(b.mr.reactor().delayed_calls().is_empty());
        b.lose(0, Reason::ConnectionDone);
        assert_eq!(b.counts(), (1, 0, 1));
    }

    #[test]
    fn chunks_are_timed_from_the_start_so_a_late_timer_does_not_delay_the_poem() {
        let mut b = Bench::new(POEM, opts(30, 10), 1);
        b.connect(0);
        // The clock jumps 75 ms at once: the chunks due at 30 and 60 ms both go out now,
        // and the next is still due at 90 ms, not 75 + 30.
        b.mr.advance(ms(75));
        assert_eq!(b.take(0), &POEM[..30]);
        b.mr.advance(ms(14));
        assert_eq!(b.take(0), b"");
        b.mr.advance(ms(1));
        assert_eq!(b.take(0), &POEM[30..]);
    }

    #[test]
    fn serves_all_clients_at_once_by_default() {
        let mut b = Bench::new(b"twenty bytes of poem", opts(20, 5), 5);
        for i in 0..5 {
            b.connect(i);
        }
        for i in 0..5 {
            assert_eq!(b.take(i), b"twent");
        }
        assert_eq!(b.counts(), (0, 5, 5));
        b.mr.advance(ms(60));
        for i in 0..5 {
            assert_eq!(b.take(i), b"y bytes of poem");
            assert!(!b.closing(i));
        }
        b.mr.advance(ms(20));
        for i in 0..5 {
            assert!(b.closing(i));
            b.lose(i, Reason::ConnectionDone);
        }
        assert_eq!(b.counts(), (5, 0, 5));
    }

    #[test]
    fn one_at_a_time_queues_clients_and_skips_those_who_left() {
        let o = ServeOptions {
            one_at_a_time: true,
            ..opts(10, 5)
        };
        let mut b = Bench::new(b"twenty bytes of poem", o, 4);
        for i in 0..4 {
            b.connect(i);
        }
        assert_eq!(b.take(0), b"twent");
        for i in 1..4 {
            assert_eq!(b.take(i), b"", "client {i} waits its turn");
        }
        // Client 0's whole poem, then its close; nobody else is served meanwhile.
        b.mr.advance(ms(40));
        assert_eq!(b.take(0), b"y bytes of poem");
        assert!(b.closing(0));
        for i in 1..4 {
            assert_eq!(b.take(i), b"");
        }
        // Its connection ends: client 1's turn, at once.
        b.lose(0, Reason::ConnectionDone);
        assert_eq!(b.take(1), b"twent");
        // Client 3 gives up while queued; client 1 hangs up after its first chunk.
        b.lose(3, Reason::ConnectionLost(None));
        b.mr.advance(ms(5));
        b.lose(1, Reason::ConnectionLost(None));
        assert_eq!(b.take(1), b"");
        // Client 2 is served from then on, on its own schedule (its first chunk at 45 ms).
        assert_eq!(b.take(2), b"twent");
        b.mr.advance(ms(9));
        assert_eq!(b.take(2), b"");
        b.mr.advance(ms(1));
        assert_eq!(b.take(2), b"y byt");
        b.mr.advance(ms(30));
        assert_eq!(b.take(2), b"es of poem");
        assert!(b.closing(2));
        b.lose(2, Reason::ConnectionDone);
        // Client 3 left: skipped, nobody is served.
        assert_eq!(b.take(3), b"");
        assert_eq!(b.counts(), (2, 0, 1));
        assert!(b.mr.reactor().delayed_calls().is_empty());
    }

    #[test]
    fn fast_sends_the_whole_poem_at_once() {
        let o = ServeOptions {
            fast: true,
            ..opts(10_000, 1)
        };
        let mut b = Bench::new(crate::poems::ECSTASY.text, o, 2);
        for i in 0..2 {
            b.connect(i);
            assert_eq!(b.take(i), crate::poems::ECSTASY.text);
            assert!(b.closing(i));
        }
        assert_eq!(b.counts(), (2, 2, 2));
        assert!(b.mr.reactor().delayed_calls().is_empty());
    }

    #[test]
    fn an_empty_poem_closes_at_once() {
        let mut b = Bench::new(b"", opts(10_000, 10), 1);
        b.connect(0);
        assert!(b.closing(0));
        assert_eq!(b.take(0), b"");
        assert_eq!(b.counts(), (1, 1, 1));
    }

    /// A client that records what it got, and when its connection ended.
    struct Recorder {
        got: Rc<RefCell<Vec<u8>>>,
        done: Rc<Cell<bool>>,
    }

    impl Protocol for Recorder {
        fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
            self.got.borrow_mut().extend_from_slice(data);
        }
        fn connection_lost(&mut self, cx: &mut Context<'_>, _: Reason) {
            self.done.set(true);
            cx.reactor().stop().unwrap();
        }
    }

    /// The smoke test over a real socket and the real clock: the poem arrives whole, the end
    /// no earlier than four delays after the start.
    #[test]
    fn serves_a_poem_over_tcp() {
        let reactor = Reactor::new().unwrap();
        let server = PoetryServer::listen(&reactor, "127.0.0.1:0", POEM, opts(30, 10)).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(Cell::new(false));
        let (g, d) = (got.clone(), done.clone());
        let factory = Factory::for_protocol(move || Recorder {
            got: g.clone(),
            done: d.clone(),
        });
        let start = Instant::now();
        reactor.connect_tcp("127.0.0.1", server.port(), factory, Duration::from_secs(5));
        reactor.call_later(Duration::from_secs(20), |r| panic!("stuck: {r:?}"));
        reactor.run().unwrap();
        assert!(done.get());
        assert_eq!(*got.borrow(), POEM);
        assert!(start.elapsed() >= ms(120), "{:?}", start.elapsed());
        assert_eq!((server.served(), server.active(), server.peak()), (1, 0, 1));
    }
}
