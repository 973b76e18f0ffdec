//! One connect of a client endpoint: its connection attempts (one for a TCP endpoint; one per
//! address, raced, for a hostname endpoint), their timers, and the Deferred they fire.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::EndpointReactor;
use crate::defer::{Resolver, TimedOut};
use crate::interfaces::{
    Address, ClientFactory, Connector, Context, HalfClose, Protocol, ProtocolFactory, Transport,
    UnixAddress,
};
use crate::protocol::{factory_port_closed, factory_port_opened};
use crate::{ConnectError, Deferred, DelayedCall, Failure, Reason};

/// Every attempt of a [`HostnameEndpoint`](super::HostnameEndpoint) failed: each address
/// tried, and why (Twisted fails with the last error only).
#[derive(Debug, Clone)]
pub struct AttemptsFailed {
    /// The host name asked for.
    pub host: String,
    /// Each address tried, in the order tried, and its failure.
    pub attempts: Vec<(SocketAddr, ConnectError)>,
}

impl fmt::Display for AttemptsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} connection attempts to {} failed",
            self.attempts.len(),
            self.host
        )?;
        for (i, (addr, e)) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{addr}: {e}")?;
            if let Some(cause) = std::error::Error::source(e) {
                write!(f, " ({cause})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for AttemptsFailed {}

/// What a connect does.
pub(crate) struct Plan {
    pub(crate) port: u16,
    /// Each attempt's connector timeout.
    pub(crate) timeout: Duration,
    pub(crate) bind: Option<SocketAddr>,
    /// Between the starts of two attempts.
    pub(crate) delay: Duration,
    /// The whole connect's time limit (hostname endpoints).
    pub(crate) deadline: Option<Duration>,
    /// A Unix socket to connect to instead of a TCP host (Unix endpoints).
    pub(crate) unix: Option<UnixAddress>,
}

struct AttemptRec {
    /// The address (hostname races), or `None` for a TCP endpoint's one attempt.
    addr: Option<SocketAddr>,
    connector: Option<Connector>,
    error: Option<ConnectError>,
}

#[derive(Default)]
struct State {
    /// The Deferred fired, or was cancelled: nothing more is started or reported.
    done: bool,
    winner: Option<usize>,
    /// Hosts still to try (IP literals for a race), next first.
    pending: VecDeque<(String, Option<SocketAddr>)>,
    attempts: Vec<AttemptRec>,
    next: Option<DelayedCall>,
    deadline: Option<DelayedCall>,
    lookup: Option<Deferred<()>>,
}

pub(crate) struct Race {
    me: Weak<Race>,
    net: Rc<dyn EndpointReactor>,
    user: Rc<dyn ProtocolFactory>,
    fire: Resolver<Transport>,
    plan: Plan,
    host: String,
    /// One attempt, whose error is the connect's error.
    single: bool,
    /// The user's factory was started and not stopped yet.
    factory_open: Cell<bool>,
    st: RefCell<State>,
}

impl Race {
    fn create(
        net: Rc<dyn EndpointReactor>,
        user: Rc<dyn ProtocolFactory>,
        plan: Plan,
        host: String,
        single: bool,
    ) -> (Rc<Race>, Deferred<Transport>) {
        let slot: Rc<RefCell<Weak<Race>>> = Rc::new(RefCell::new(Weak::new()));
        let s = slot.clone();
        let (d, fire) = Deferred::with_canceller(move |_| {
            let race = s.borrow().upgrade();
            if let Some(race) = race {
                race.call_off();
            }
        });
        let race = Rc::new_cyclic(|me| Race {
            me: me.clone(),
            net,
            user,
            fire,
            plan,
            host,
            single,
            factory_open: Cell::new(false),
            st: RefCell::new(State::default()),
        });
        *slot.borrow_mut() = Rc::downgrade(&race);
        factory_port_opened(&race.user);
        race.factory_open.set(true);
        (race, d)
    }

    /// One attempt to `host` (a name or an IP), resolved by the connector.
    pub(crate) fn single(
        net: Rc<dyn EndpointReactor>,
        user: Rc<dyn ProtocolFactory>,
        plan: Plan,
        host: String,
    ) -> Deferred<Transport> {
        let (race, d) = Race::create(net, user, plan, host.clone(), true);
        race.st.borrow_mut().pending.push_back((host, None));
        race.start_next();
        d
    }

    /// Resolves `host`, then races its addresses.
    pub(crate) fn hostname(
        net: Rc<dyn EndpointReactor>,
        user: Rc<dyn ProtocolFactory>,
        plan: Plan,
        host: String,
    ) -> Deferred<Transport> {
        let (race, d) = Race::create(net.clone(), user, plan, host.clone(), false);
        if let Some(after) = race.plan.deadline {
            let me = race.clone();
            let call = net.reactor().call_later(after, move |_| {
                me.finish(Failure::new(ConnectError::TimedOut(TimedOut { after })));
            });
            race.st.borrow_mut().deadline = Some(call);
        }
        let me = race.clone();
        let lookup = net.resolve(&host, race.plan.port).add_both(move |result| {
            me.resolved(result);
            Ok(())
        });
        let mut st = race.st.borrow_mut();
        if !st.done && !lookup.called() {
            st.lookup = Some(lookup);
        }
        drop(st);
        d
    }

    fn strong(&self) -> Rc<Race> {
        self.me.upgrade().expect("a race is alive while it runs")
    }

    fn resolved(&self, result: Result<Vec<SocketAddr>, Failure>) {
        if self.st.borrow().done {
            return;
        }
        self.st.borrow_mut().lookup = None;
        match result {
            Ok(addrs) => {
                let order = super::interleave(&addrs);
                {
                    let mut st = self.st.borrow_mut();
                    for a in order {
                        st.pending.push_back((a.ip().to_string(), Some(a)));
                    }
                }
                self.start_next();
            }
            Err(f) => self.finish(f),
        }
    }

    /// Starts the next attempt, and schedules the one after.
    fn start_next(&self) {
        let (host, index) = {
            let mut st = self.st.borrow_mut();
            if st.done || st.winner.is_some() {
                return;
            }
            if let Some(t) = st.next.take() {
                let _ = t.cancel();
            }
            let Some((host, addr)) = st.pending.pop_front() else {
                return;
            };
            st.attempts.push(AttemptRec {
                addr,
                connector: None,
                error: None,
            });
            (host, st.attempts.len() - 1)
        };
        let factory = Rc::new(AttemptFactory {
            race: self.strong(),
            index,
        });
        let connector = match &self.plan.unix {
            Some(addr) => self
                .net
                .connect_unix_endpoint(addr.clone(), factory, self.plan.timeout),
            None => self.net.connect_tcp_bound(
                &host,
                self.plan.port,
                factory,
                self.plan.timeout,
                self.plan.bind,
            ),
        };
        let more = {
            let mut st = self.st.borrow_mut();
            let rec = &mut st.attempts[index];
            if rec.error.is_none() && !st.done {
                st.attempts[index].connector = Some(connector.clone());
            }
            !st.done && st.winner.is_none() && !st.pending.is_empty()
        };
        if more {
            let me = self.strong();
            let call = self
                .net
                .reactor()
                .call_later(self.plan.delay, move |_| me.start_next());
            self.st.borrow_mut().next = Some(call);
        }
        // A connector that failed at once (the memory reactor's, say) reported already.
    }

    /// An attempt connected: it wins unless another did, or the connect was called off.
    fn won(&self, index: usize, addr: &Address) -> Option<Box<dyn Protocol>> {
        let losers = {
            let mut st = self.st.borrow_mut();
            if st.done || st.winner.is_some() {
                return None;
            }
            st.winner = Some(index);
            Self::cancel_timers(&mut st);
            st.attempts
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .filter_map(|(_, a)| a.connector.take())
                .collect::<Vec<_>>()
        };
        for c in losers {
            c.disconnect();
        }
        let inner = self.user.build_protocol(addr)?;
        Some(Box::new(Announce {
            inner,
            race: self.strong(),
        }))
    }

    fn cancel_timers(st: &mut State) {
        if let Some(t) = st.next.take() {
            let _ = t.cancel();
        }
        if let Some(t) = st.deadline.take() {
            let _ = t.cancel();
        }
    }

    /// An attempt failed.
    fn attempt_failed(&self, index: usize, reason: ConnectError) {
        enum Next {
            Nothing,
            Start,
            Fail(Failure),
        }
        let next = {
            let mut st = self.st.borrow_mut();
            if let Some(rec) = st.attempts.get_mut(index) {
                rec.connector = None;
                if rec.error.is_none() {
                    rec.error = Some(reason.clone());
                }
            }
            if st.done {
                Next::Nothing
            } else if st.winner == Some(index) {
                // The winner's protocol was refused or its factory panicked.
                Next::Fail(Failure::new(reason))
            } else if st.winner.is_some() {
                Next::Nothing
            } else if !st.pending.is_empty() {
                Next::Start
            } else if st.attempts.iter().all(|a| a.error.is_some()) {
                if self.single {
                    Next::Fail(Failure::new(reason))
                } else {
                    let attempts = st
                        .attempts
                        .iter()
                        .filter_map(|a| Some((a.addr?, a.error.clone()?)))
                        .collect();
                    Next::Fail(Failure::new(AttemptsFailed {
                        host: self.host.clone(),
                        attempts,
                    }))
                }
            } else {
                Next::Nothing
            }
        };
        match next {
            Next::Nothing => {}
            Next::Start => self.start_next(),
            Next::Fail(f) => self.finish(f),
        }
    }

    /// Ends the connect with `failure`: everything still running is stopped.
    fn finish(&self, failure: Failure) {
        if self.stop_all() {
            let _ = self.fire.errback(failure);
        }
    }

    /// The Deferred was cancelled: stop everything (it fails with `Cancelled`).
    fn call_off(&self) {
        self.stop_all();
    }

    /// Stops the timers, the lookup and the attempts; false when already done.
    fn stop_all(&self) -> bool {
        let (connectors, lookup) = {
            let mut st = self.st.borrow_mut();
            if st.done {
                return false;
            }
            st.done = true;
            Self::cancel_timers(&mut st);
            st.pending.clear();
            let connectors: Vec<Connector> = st
                .attempts
                .iter_mut()
                .filter_map(|a| a.connector.take())
                .collect();
            (connectors, st.lookup.take())
        };
        if let Some(l) = lookup {
            l.cancel();
        }
        for c in connectors {
            c.disconnect();
        }
        self.close_factory();
        true
    }

    fn close_factory(&self) {
        if self.factory_open.replace(false) {
            factory_port_closed(&self.user);
        }
    }

    /// The winner's protocol ran `connection_made`.
    fn connected(&self, transport: &Transport) {
        let late = {
            let mut st = self.st.borrow_mut();
            let late = st.done;
            st.done = true;
            Self::cancel_timers(&mut st);
            st.attempts.clear();
            late
        };
        if late {
            // Cancelled while the winner was being set up: nobody wants the connection.
            transport.abort_connection();
        } else {
            let _ = self.fire.callback(transport.clone());
        }
    }
}

/// The factory of one attempt: reports to the race.
struct AttemptFactory {
    race: Rc<Race>,
    index: usize,
}

impl ProtocolFactory for AttemptFactory {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.race.won(self.index, addr)
    }
}

impl ClientFactory for AttemptFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: ConnectError) {
        self.race.attempt_failed(self.index, reason);
    }
}

/// The winner's protocol: fires the connect's Deferred after `connection_made`, stops the
/// user's factory after `connection_lost` (Twisted's `_WrappingProtocol`).
struct Announce {
    inner: Box<dyn Protocol>,
    race: Rc<Race>,
}

impl Protocol for Announce {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.inner.connection_made(cx);
        self.race.connected(cx.transport());
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.inner.connection_lost(cx, reason);
        self.race.close_factory();
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}
