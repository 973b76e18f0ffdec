//! The caching poetry proxy (the tutorial's `twisted-server-2/poetry-proxy.py`, part 14).
//!
//! A client that connects gets the poem of an upstream poetry server, then the connection
//! closes. The proxy fetches the poem from upstream once and serves every later client from its
//! cache. Clients that arrive while the first fetch is still running all wait on that one fetch
//! (the tutorial's version started one upstream download per waiting client until the first
//! finished): the fetch is one [`Deferred`] and each waiting client [observes](Deferred::observe)
//! it. A failed fetch is not cached: the clients waiting on it are disconnected with a reset,
//! never a clean close that would read as an empty poem (and a log line says why), and the next
//! client starts a new fetch.
//!
//! [`ProxyService`] is the cache and knows nothing of sockets: it takes the upstream fetch as a
//! function returning a Deferred, so it is tested with Deferreds fired by hand.

use std::cell::RefCell;
use std::rc::Rc;

use torsion::defer::Failure;
use torsion::{Context, Deferred, Factory, Protocol, ProtocolFactory, Reactor, Transport};

/// The upstream fetch, run on the given reactor: a Deferred that fires with the poem, or fails.
pub type Fetch = Rc<dyn Fn(&Reactor) -> Deferred<Vec<u8>>>;

/// A fetch's outcome, shared by its waiters.
type Outcome = Result<Rc<[u8]>, Failure>;

/// A waiter's own Deferred for a shared fetch.
fn waiter(fetch: &Deferred<Outcome>) -> Deferred<Rc<[u8]>> {
    fetch.observe().add_callback(|outcome| outcome)
}

/// Where the cache stands.
enum Cache {
    /// Nothing fetched yet, or the last fetch failed.
    Empty,
    /// A fetch is running; waiters observe it. Its chain carries the outcome as a value, so
    /// a failure belongs to each waiter (who handles it), not to the shared chain.
    Fetching(Deferred<Outcome>),
    /// The poem.
    Cached(Rc<[u8]>),
}

/// The proxy's cache of the upstream poem (the tutorial's `ProxyService`).
pub struct ProxyService {
    fetch: Fetch,
    cache: RefCell<Cache>,
    fetches: std::cell::Cell<u64>,
    verbose: bool,
}

impl ProxyService {
    /// A service that gets the poem with `fetch` the first time it is asked. With `verbose`
    /// it prints `Using cached poem.`/`Fetching poem from server.` on stdout, as the tutorial.
    pub fn new(fetch: Fetch, verbose: bool) -> Rc<ProxyService> {
        Rc::new(ProxyService {
            fetch,
            cache: RefCell::new(Cache::Empty),
            fetches: std::cell::Cell::new(0),
            verbose,
        })
    }

    /// The poem: at once from the cache, else from the fetch running now, else from a new one
    /// on `reactor`.
    pub fn get_poem(self: &Rc<Self>, reactor: &Reactor) -> Deferred<Rc<[u8]>> {
        let running = match &*self.cache.borrow() {
            Cache::Cached(poem) => {
                self.say("Using cached poem.");
                return Deferred::succeed(poem.clone());
            }
            Cache::Fetching(d) => Some(waiter(d)),
            Cache::Empty => None,
        };
        if let Some(waiter) = running {
            self.say("Waiting for the poem being fetched.");
            return waiter;
        }
        self.say("Fetching poem from server.");
        self.fetches.set(self.fetches.get() + 1);
        let me = Rc::downgrade(self);
        let fetch = (self.fetch)(reactor).add_both(move |result: Result<Vec<u8>, Failure>| {
            let outcome: Outcome = result.map(Rc::<[u8]>::from);
            if let Some(me) = me.upgrade() {
                *me.cache.borrow_mut() = match &outcome {
                    Ok(poem) => Cache::Cached(poem.clone()),
                    Err(_) => Cache::Empty,
                };
            }
            Ok(outcome)
        });
        let first = waiter(&fetch);
        // The fetch may have finished already (a fetch that fails at once): keep the state
        // its callback set.
        if fetch.current_result().is_none() {
            *self.cache.borrow_mut() = Cache::Fetching(fetch);
        }
        first
    }

    /// Upstream fetches started so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.get()
    }

    /// True once the poem is cached.
    pub fn is_cached(&self) -> bool {
        matches!(&*self.cache.borrow(), Cache::Cached(_))
    }

    fn say(&self, line: &str) {
        if self.verbose {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    /// The factory of the proxy's server side: each connection gets the poem, then closes.
    pub fn factory(self: &Rc<Self>) -> impl ProtocolFactory {
        Factory::with_state(self.clone(), |service, _| ProxyProtocol {
            service: (**service).clone(),
        })
    }
}

/// One client of the proxy (the tutorial's `PoetryProxyProtocol`).
struct ProxyProtocol {
    service: Rc<ProxyService>,
}

impl Protocol for ProxyProtocol {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let transport: Transport = cx.transport().clone();
        let peer = transport.peer();
        let sent = self.service.get_poem(cx.reactor()).add_both(move |poem| {
            match poem {
                Ok(poem) => {
                    transport.write_shared(poem);
                    transport.lose_connection();
                }
                Err(f) => {
                    tracing::warn!(
                        "poetry proxy: no poem for {peer}: {}",
                        torsion::error::Chain(f.error())
                    );
                    // A clean close would read as an empty poem: reset the connection.
                    transport.abort_connection();
                }
            }
            Ok(())
        });
        drop(sent);
    }

    /// What a client sends is ignored: the poem is the whole conversation.
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use torsion::defer::Resolver;
    use torsion::testing::StringTransport;

    /// The fetches started and not fired yet.
    type Pending = Rc<RefCell<Vec<Resolver<Vec<u8>>>>>;

    /// A fetch whose Deferreds the test fires, counting the calls.
    fn manual() -> (Fetch, Pending) {
        let pending: Pending = Rc::default();
        let p = pending.clone();
        let fetch: Fetch = Rc::new(move |_| {
            let (d, fire) = Deferred::new();
            p.borrow_mut().push(fire);
            d
        });
        (fetch, pending)
    }

    /// A client connected to the proxy; the protocol is kept alive with it.
    struct Client {
        transport: StringTransport,
        _protocol: Box<dyn Protocol>,
    }

    impl Client {
        fn value(&self) -> Vec<u8> {
            self.transport.value()
        }
        fn disconnecting(&self) -> bool {
            self.transport.disconnecting()
        }
        fn aborted(&self) -> bool {
            self.transport.aborted()
        }
    }

    fn client(service: &Rc<ProxyService>) -> Client {
        let t = StringTransport::new().expect("a transport");
        let mut protocol = service
            .factory()
            .build_protocol(&t.transport().peer())
            .expect("a protocol");
        t.connect(&mut *protocol);
        Client {
            transport: t,
            _protocol: protocol,
        }
    }

    #[test]
    fn many_clients_waiting_share_one_upstream_fetch() {
        let (fetch, pending) = manual();
        let service = ProxyService::new(fetch, false);
        let clients: Vec<_> = (0..5).map(|_| client(&service)).collect();
        assert_eq!(
            service.fetches(),
            1,
            "one upstream connection for five waiters"
        );
        assert!(clients
            .iter()
            .all(|c| c.value().is_empty() && !c.disconnecting()));
        let fire = pending.borrow_mut().remove(0);
        fire.callback(b"a poem".to_vec()).unwrap();
        for c in &clients {
            assert_eq!(c.value(), b"a poem");
            assert!(c.disconnecting(), "closed after the poem");
        }
        assert!(service.is_cached());
        let late = client(&service);
        assert_eq!(late.value(), b"a poem");
        assert_eq!(service.fetches(), 1, "served from the cache");
    }

    #[test]
    fn a_failed_fetch_is_not_cached_and_the_next_client_retries() {
        let (fetch, pending) = manual();
        let service = ProxyService::new(fetch, false);
        let first = client(&service);
        let second = client(&service);
        let fire = pending.borrow_mut().remove(0);
        fire.errback(Failure::msg("upstream refused")).unwrap();
        for c in [&first, &second] {
            assert!(c.value().is_empty());
            assert!(c.aborted(), "a waiter is reset when the fetch fails");
        }
        assert!(!service.is_cached());
        let third = client(&service);
        assert_eq!(service.fetches(), 2, "a new fetch after the failure");
        pending
            .borrow_mut()
            .remove(0)
            .callback(b"at last".to_vec())
            .unwrap();
        assert_eq!(third.value(), b"at last");
    }

    #[test]
    fn a_fetch_that_fails_at_once_leaves_the_cache_empty() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let fetch: Fetch = Rc::new(move |_| {
            c.set(c.get() + 1);
            Deferred::fail(Failure::msg("no route"))
        });
        let service = ProxyService::new(fetch, false);
        let a = client(&service);
        let b = client(&service);
        assert!(a.aborted() && b.aborted());
        assert_eq!(calls.get(), 2, "nothing stale kept between the two");
    }
}
