//! Endpoints: typed connects over the memory reactor (attempts played by the test, time moved by
//! hand), Happy Eyeballs timing, endpoint strings, and the same over TCP on every backend.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use torsion::defer::Cancelled;
use torsion::endpoints::{
    client_from_string, connect_protocol, server_from_string, AttemptsFailed, ClientEndpoint,
    ClientEndpointExt, EndpointArgs, EndpointError, EndpointReactor, EndpointRegistry,
    HostnameEndpoint, ServerEndpoint, TcpClientDescription, TcpClientEndpoint,
    TcpServerDescription, TcpServerEndpoint, UnixClientDescription, UnixServerDescription,
};
use torsion::testing::{run_until, MemoryReactor};
use torsion::{
    reactor_test, Address, ClientFactory, ConnectError, Connector, Context, Deferred, Factory,
    Failure, ListeningPort, Protocol, ProtocolFactory, Reactor, ReactorTcp,
};

/// A memory reactor, with the lock that keeps descriptor-counting tests apart (its waker is a
/// descriptor).
fn memory() -> (std::sync::MutexGuard<'static, ()>, MemoryReactor) {
    let serial = torsion::testing::serial();
    (serial, MemoryReactor::new().unwrap())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[derive(Default)]
struct Hello {
    made: u32,
    got: Vec<u8>,
    lost: u32,
}

impl Protocol for Hello {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.made += 1;
        cx.transport().write(b"hello");
    }
    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, _: torsion::Reason) {
        self.lost += 1;
    }
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

fn echo() -> Rc<dyn ProtocolFactory> {
    Rc::new(Factory::for_protocol(|| Echo))
}

fn failure<T: std::fmt::Debug + 'static>(d: Deferred<T>) -> Failure {
    d.try_result()
        .expect("the Deferred fired")
        .expect_err("the Deferred failed")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

// ------------------------------------------------------------------ TCP client, in memory

#[test]
fn tcp_client_endpoint_gives_the_connected_protocol_after_connection_made() {
    let (_serial, mr) = memory();
    let endpoint = TcpClientEndpoint::new(&mr, "10.0.0.9", 7)
        .timeout(secs(5))
        .bind_address("10.0.0.1:0".parse().unwrap());
    let d = endpoint.connect(|_| Hello::default());
    let clients = mr.tcp_clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(
        (
            clients[0].host.as_str(),
            clients[0].port,
            clients[0].timeout
        ),
        ("10.0.0.9", 7, secs(5))
    );
    assert_eq!(clients[0].bind, Some("10.0.0.1:0".parse().unwrap()));
    assert!(!d.called(), "nothing before the connection is made");

    let pump = clients[0].accept(&Factory::for_protocol(|| Echo)).unwrap();
    let c = d.try_result().unwrap().unwrap();
    assert_eq!(c.protocol().borrow().made, 1, "connection_made ran before");
    assert_eq!(c.transport().peer().to_string(), "10.0.0.9:7");
    pump.flush();
    assert_eq!(c.protocol().borrow().got, b"hello");
    c.transport().lose_connection();
    pump.flush();
    assert_eq!(c.with(|p| p.lost), 1);
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn tcp_client_endpoint_failure_is_the_connect_error_and_stops_the_factory() {
    let (_serial, mr) = memory();
    let starts = Rc::new(Cell::new(0));
    let stops = Rc::new(Cell::new(0));
    let (a, b) = (starts.clone(), stops.clone());
    let factory = Factory::for_protocol(Hello::default)
        .on_start(move |_| a.set(a.get() + 1))
        .on_stop(move |_| b.set(b.get() + 1));
    let d = TcpClientEndpoint::new(&mr, "example.com", 80).connect_factory(Rc::new(factory));
    assert_eq!((starts.get(), stops.get()), (1, 0));
    assert!(mr.tcp_clients()[0].fail(ConnectError::Refused));
    let f = failure(d);
    assert!(matches!(
        f.downcast_ref::<ConnectError>(),
        Some(ConnectError::Refused)
    ));
    assert_eq!((starts.get(), stops.get()), (1, 1));
}

#[test]
fn cancelling_the_connect_cancels_the_attempt() {
    let (_serial, mr) = memory();
    let d = TcpClientEndpoint::new(&mr, "10.0.0.9", 7).connect(|_| Hello::default());
    let client = &mr.tcp_clients()[0];
    assert!(client.pending());
    d.cancel();
    assert!(!client.pending(), "the connector was told to stop");
    assert!(failure(d).check::<Cancelled>());
    assert!(client.accept(&Factory::for_protocol(|| Echo)).is_none());
}

#[test]
fn a_factory_that_builds_nothing_fails_the_connect() {
    struct Nothing;
    impl ProtocolFactory for Nothing {
        fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
            None
        }
    }
    let (_serial, mr) = memory();
    let d = TcpClientEndpoint::new(&mr, "10.0.0.9", 7).connect_factory(Rc::new(Nothing));
    assert!(mr.tcp_clients()[0]
        .accept(&Factory::for_protocol(|| Echo))
        .is_none());
    let f = failure(d);
    assert!(matches!(
        f.downcast_ref::<ConnectError>(),
        Some(ConnectError::NoProtocol)
    ));
}

#[test]
fn connect_protocol_connects_that_very_protocol() {
    let (_serial, mr) = memory();
    let mine = Hello {
        got: b"before:".to_vec(),
        ..Hello::default()
    };
    let boxed: Box<dyn ClientEndpoint> = Box::new(TcpClientEndpoint::new(&mr, "10.0.0.9", 7));
    let d = connect_protocol(&*boxed, mine);
    let pump = mr.tcp_clients()[0]
        .accept(&Factory::for_protocol(|| Echo))
        .unwrap();
    pump.flush();
    let c = d.try_result().unwrap().unwrap();
    assert_eq!(c.protocol().borrow().got, b"before:hello");
}

#[test]
fn server_endpoint_listens_with_its_interface_and_backlog() {
    let (_serial, mr) = memory();
    let e = TcpServerEndpoint::new(&mr, 8080)
        .interface("127.0.0.1".parse().unwrap())
        .backlog(7);
    let port = e.listen(echo()).try_result().unwrap().unwrap();
    let servers = mr.tcp_servers();
    assert_eq!(servers[0].addr.to_string(), "127.0.0.1:8080");
    assert_eq!(servers[0].backlog, 7);
    assert_eq!(port.port(), 8080);
    port.stop_listening();
}

// ------------------------------------------------------------ Happy Eyeballs, in memory

fn hostname(mr: &MemoryReactor, addrs: &[&str]) -> HostnameEndpoint {
    mr.add_host("example.com", &ips(addrs));
    HostnameEndpoint::new(mr, "example.com", 443)
}

fn hosts(mr: &MemoryReactor) -> Vec<String> {
    mr.tcp_clients().iter().map(|c| c.host.clone()).collect()
}

#[test]
fn attempts_interleave_families_ipv6_first_250_ms_apart() {
    let (_serial, mr) = memory();
    let e = hostname(
        &mr,
        &[
            "192.0.2.1",
            "192.0.2.2",
            "2001:db8::1",
            "2001:db8::2",
            "192.0.2.3",
        ],
    );
    let d = e.connect(|_| Hello::default());
    assert!(hosts(&mr).is_empty(), "resolution answers on a later round");
    mr.flush();
    assert_eq!(hosts(&mr), ["2001:db8::1"]);
    mr.advance(ms(249));
    assert_eq!(hosts(&mr).len(), 1, "not before 250 ms");
    mr.advance(ms(1));
    assert_eq!(hosts(&mr), ["2001:db8::1", "192.0.2.1"]);
    mr.advance(ms(250));
    assert_eq!(hosts(&mr), ["2001:db8::1", "192.0.2.1", "2001:db8::2"]);
    // A failure starts the next attempt at once, and the one after 250 ms from then.
    mr.advance(ms(100));
    assert!(mr.tcp_clients()[1].fail(ConnectError::Refused));
    assert_eq!(hosts(&mr).len(), 4);
    assert_eq!(hosts(&mr)[3], "192.0.2.2");
    mr.advance(ms(249));
    assert_eq!(hosts(&mr).len(), 4);
    mr.advance(ms(1));
    assert_eq!(hosts(&mr)[4], "192.0.2.3");
    assert_eq!(mr.pending_clients().len(), 4);

    // The third attempt wins: the others are cancelled, no timer is left.
    let winner = mr.tcp_clients()[2].clone();
    let pump = winner.accept(&Factory::for_protocol(|| Echo)).unwrap();
    let c = d.try_result().unwrap().unwrap();
    assert_eq!(c.transport().peer().to_string(), "[2001:db8::2]:443");
    assert!(mr.pending_clients().is_empty(), "the losers were cancelled");
    assert!(mr.reactor().delayed_calls().is_empty(), "no timer left");
    assert_eq!(c.protocol().borrow().made, 1);
    drop(pump);
}

#[test]
fn only_the_winner_builds_a_protocol() {
    let (_serial, mr) = memory();
    let built = Rc::new(Cell::new(0));
    let b = built.clone();
    let e = hostname(&mr, &["2001:db8::1", "192.0.2.1"]);
    let d = e.connect(move |_| {
        b.set(b.get() + 1);
        Hello::default()
    });
    mr.flush();
    mr.advance(ms(250));
    let [v6, v4] = <[_; 2]>::try_from(mr.tcp_clients()).unwrap();
    let _pump = v4.accept(&Factory::for_protocol(|| Echo)).unwrap();
    assert!(d.try_result().unwrap().is_ok());
    assert!(
        v6.accept(&Factory::for_protocol(|| Echo)).is_none(),
        "a loser cannot connect"
    );
    assert_eq!(built.get(), 1);
}

#[test]
fn every_attempt_failing_lists_them_all() {
    let (_serial, mr) = memory();
    let e = hostname(&mr, &["192.0.2.1", "2001:db8::1"]);
    let d = e.connect(|_| Hello::default());
    mr.flush();
    mr.tcp_clients()[0].fail(ConnectError::Refused);
    mr.tcp_clients()[1].fail(ConnectError::HostNotFound("unreachable".into()));
    let f = failure(d);
    let all = f.downcast_ref::<AttemptsFailed>().expect("AttemptsFailed");
    assert_eq!(all.host, "example.com");
    let addrs: Vec<String> = all.attempts.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(addrs, ["[2001:db8::1]:443", "192.0.2.1:443"]);
    assert!(matches!(all.attempts[0].1, ConnectError::Refused));
    let text = all.to_string();
    assert!(
        text.contains("all 2 connection attempts to example.com failed"),
        "{text}"
    );
    assert!(text.contains("192.0.2.1:443"), "{text}");
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn the_overall_timeout_cancels_everything() {
    let (_serial, mr) = memory();
    let e = hostname(&mr, &["2001:db8::1", "192.0.2.1", "2001:db8::2"]).timeout(secs(2));
    let d = e.connect(|_| Hello::default());
    mr.flush();
    mr.advance(ms(250));
    mr.advance(ms(250));
    mr.advance(ms(100));
    assert_eq!(mr.pending_clients().len(), 3);
    mr.advance(ms(1399));
    assert!(!d.called());
    mr.advance(ms(1));
    let f = failure(d);
    assert!(
        matches!(f.downcast_ref::<ConnectError>(), Some(ConnectError::TimedOut(t)) if t.after == secs(2))
    );
    assert!(mr.pending_clients().is_empty());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn an_unknown_name_is_host_not_found() {
    let (_serial, mr) = memory();
    let d = HostnameEndpoint::new(&mr, "nowhere.example", 80).connect(|_| Hello::default());
    mr.flush();
    let f = failure(d);
    assert!(matches!(
        f.downcast_ref::<ConnectError>(),
        Some(ConnectError::HostNotFound(_))
    ));
    assert!(mr.tcp_clients().is_empty());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn cancelling_during_resolution_starts_nothing() {
    let (_serial, mr) = memory();
    let e = hostname(&mr, &["192.0.2.1"]);
    let d = e.connect(|_| Hello::default());
    d.cancel();
    mr.flush();
    assert!(failure(d).check::<Cancelled>());
    assert!(mr.tcp_clients().is_empty());
    assert!(mr.reactor().delayed_calls().is_empty());
}

#[test]
fn cancelling_mid_race_cancels_every_attempt() {
    let (_serial, mr) = memory();
    let e = hostname(&mr, &["2001:db8::1", "192.0.2.1", "192.0.2.2"]);
    let d = e.connect(|_| Hello::default());
    mr.flush();
    mr.advance(ms(250));
    assert_eq!(mr.pending_clients().len(), 2);
    d.cancel();
    assert!(failure(d).check::<Cancelled>());
    assert!(mr.pending_clients().is_empty());
    assert!(mr.reactor().delayed_calls().is_empty());
    mr.advance(secs(5));
    assert_eq!(mr.tcp_clients().len(), 2, "the third attempt never started");
}

// ---------------------------------------------------------------------- endpoint strings

#[test]
fn server_strings() {
    let parse = |s: &str| TcpServerDescription::from_args(&EndpointArgs::parse(s)?);
    let d = parse("tcp:8080:interface=127.0.0.1:backlog=50").unwrap();
    assert_eq!(
        (d.port, d.interface.to_string(), d.backlog),
        (8080, "127.0.0.1".into(), 50)
    );
    let d = parse("tcp:port=8080").unwrap();
    assert_eq!(
        (d.port, d.interface.to_string(), d.backlog),
        (8080, "0.0.0.0".into(), 50)
    );
    let d = parse(r"tcp:0:interface=\:\:1").unwrap();
    assert_eq!(d.interface.to_string(), "::1");
    assert_eq!(parse("TCP:1").unwrap().port, 1);

    let err = |s: &str| parse(s).unwrap_err();
    assert_eq!(
        err("tcp"),
        EndpointError::Missing {
            scheme: "tcp".into(),
            name: "port"
        }
    );
    assert_eq!(
        err("tcp:65536").to_string(),
        "port: 65536 is out of range (0 to 65535)"
    );
    assert_eq!(
        err("tcp:http").to_string(),
        "port: \"http\" is not a number"
    );
    assert_eq!(err("tcp:-1").to_string(), "port: \"-1\" is not a number");
    assert_eq!(
        err("tcp:80:backlog=0").to_string(),
        "backlog: 0 is out of range (1 to 65535)"
    );
    assert_eq!(
        err("tcp:80:interface=localhost").to_string(),
        "interface: \"localhost\" is not an IP address"
    );
    assert_eq!(
        err("tcp:80:colour=blue").to_string(),
        "tcp: unknown option \"colour\""
    );
    assert_eq!(
        err("tcp:80:81").to_string(),
        "tcp: unexpected argument \"81\""
    );
    assert_eq!(
        err("tcp:80:port=81").to_string(),
        "argument \"port\" given twice"
    );
    assert_eq!(
        err("tcp:80:backlog=1:backlog=2").to_string(),
        "argument \"backlog\" given twice"
    );
    assert_eq!(err(r"tcp:80\"), EndpointError::TrailingBackslash);
    assert_eq!(err(""), EndpointError::Empty);
    assert_eq!(err(":80"), EndpointError::Empty);
    assert!(matches!(
        err(&"9".repeat(5000)),
        EndpointError::OutOfRange {
            name: "description",
            ..
        }
    ));
}

#[test]
fn client_strings() {
    let parse = |s: &str| TcpClientDescription::from_args(&EndpointArgs::parse(s)?);
    let d = parse("tcp:host=example.com:port=80:timeout=5:bindAddress=10.0.0.2").unwrap();
    assert_eq!(d.host, "example.com");
    assert_eq!(d.port, 80);
    assert_eq!(d.timeout, secs(5));
    assert_eq!(d.bind, Some("10.0.0.2:0".parse().unwrap()));
    let d = parse("tcp:example.com:80").unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.timeout),
        ("example.com", 80, secs(30))
    );
    let d = parse(r"tcp:host=\:\:1:port=80:timeout=0.5:bindAddress=\:\:1").unwrap();
    assert_eq!(d.host, "::1");
    assert_eq!(d.timeout, ms(500));
    assert_eq!(d.bind, Some("[::1]:0".parse().unwrap()));
    let d = parse(r"tcp:a\=b:80").unwrap();
    assert_eq!(d.host, "a=b", "an escaped '=' is part of the value");
    let d = parse(r"tcp:h:1:bindAddress=10.0.0.2\:5000").unwrap();
    assert_eq!(d.bind, Some("10.0.0.2:5000".parse().unwrap()));

    let err = |s: &str| parse(s).unwrap_err().to_string();
    assert_eq!(
        err("tcp:host=example.com"),
        "tcp: missing argument \"port\""
    );
    assert_eq!(err("tcp:port=80"), "tcp: missing argument \"host\"");
    assert_eq!(
        err("tcp:example.com:0"),
        "port: 0 is out of range (1 to 65535)"
    );
    assert_eq!(
        err("tcp:h:80:timeout=soon"),
        "timeout: \"soon\" is not a number"
    );
    assert_eq!(
        err("tcp:h:80:timeout=0"),
        "timeout: 0 is out of range (more than 0 and at most 86400 seconds)"
    );
    assert_eq!(
        err("tcp:h:80:timeout=1e9"),
        "timeout: \"1e9\" is not a number"
    );
    assert_eq!(
        err("tcp:h:80:bindAddress=me"),
        "bindAddress: \"me\" is not an IP address"
    );
    assert_eq!(err("tcp:h:80:timout=5"), "tcp: unknown option \"timout\"");
}

#[test]
fn unix_strings_are_parsed_in_full() {
    let server = |s: &str| UnixServerDescription::from_args(&EndpointArgs::parse(s)?);
    let d = server("unix:/run/app.sock").unwrap();
    assert_eq!(d.path.to_str(), Some("/run/app.sock"));
    assert_eq!((d.mode, d.backlog, d.lockfile), (0o666, 50, true));
    let d = server("unix:address=/p:mode=660:lockfile=0:backlog=5").unwrap();
    assert_eq!(
        (d.path.to_str(), d.mode, d.backlog, d.lockfile),
        (Some("/p"), 0o660, 5, false)
    );
    assert_eq!(
        server("unix:path=/p:mode=660:lockfile=1").unwrap().mode,
        0o660
    );
    assert_eq!(
        server(r"unix:/tmp/a\:b").unwrap().path.to_str(),
        Some("/tmp/a:b")
    );
    let err = |s: &str| server(s).unwrap_err().to_string();
    assert_eq!(err("unix:/p:mode=999"), "mode: \"999\" is not a number");
    assert_eq!(
        err("unix:/p:mode=1777"),
        "mode: 1777 is out of range (octal 0 to 777)"
    );
    assert_eq!(
        err("unix:/p:lockfile=yes"),
        "lockfile: yes is out of range (0 or 1)"
    );
    assert_eq!(err("unix:"), "unix: missing argument \"path\"");
    assert_eq!(
        err("unix:/p:address=/q"),
        "argument \"address\" given twice"
    );
    assert_eq!(
        err("unix:path=/p:address=/q"),
        "argument \"path\" given twice"
    );

    let client = |s: &str| UnixClientDescription::from_args(&EndpointArgs::parse(s)?);
    let d = client("unix:path=/var/foo/bar:timeout=9:checkPID=1").unwrap();
    assert_eq!(
        (d.path.to_str(), d.timeout, d.check_pid),
        (Some("/var/foo/bar"), secs(9), true)
    );
    assert_eq!(client("unix:address=/s").unwrap().path.to_str(), Some("/s"));
    assert_eq!(client("unix:/s").unwrap().timeout, secs(30));
    assert_eq!(
        client("unix:/s:mode=600").unwrap_err().to_string(),
        "unix: unknown option \"mode\""
    );
}

#[test]
fn registry_schemes() {
    let (_serial, mr) = memory();
    let e = server_from_string(&mr, "tcp:0:interface=127.0.0.1:backlog=9").unwrap();
    let port = e.listen(echo()).try_result().unwrap().unwrap();
    assert_eq!(mr.tcp_servers()[0].backlog, 9);
    port.stop_listening();

    let e = client_from_string(&mr, "tcp:host=example.com:port=80:timeout=5").unwrap();
    let _d = e.connect(|_| Hello::default());
    assert_eq!(mr.tcp_clients()[0].timeout, secs(5));
    assert_eq!(mr.tcp_clients()[0].host, "example.com");

    let unknown = server_from_string(&mr, "ssl:443").unwrap_err();
    assert_eq!(unknown.to_string(), "unknown server endpoint type \"ssl\"");
    assert_eq!(
        client_from_string(&mr, "unix:/s").unwrap().describe(),
        "unix:/s"
    );
    assert!(matches!(
        client_from_string(&mr, "unix:/s:bogus=1"),
        Err(EndpointError::UnknownOption { .. })
    ));

    // Another crate adds a scheme.
    let mut registry = EndpointRegistry::new();
    registry.register_client(
        "fake",
        Rc::new(|reactor, args| {
            args.check(&["port"], 1)?;
            let port = args.require("port", Some(0))?.parse().unwrap_or(1);
            Ok(Box::new(TcpClientEndpoint::new(reactor, "10.9.9.9", port)))
        }),
    );
    let e = registry.client(&mr, "FAKE:port=99").unwrap();
    assert_eq!(e.describe(), "tcp:10.9.9.9:99");
    assert!(EndpointRegistry::empty().client(&mr, "tcp:h:1").is_err());

    // The thread's default registry: client_from_string knows the scheme from then on, and a
    // parser may itself parse a string (a wrapping scheme).
    assert!(matches!(
        client_from_string(&mr, "via:tcp\\:10.1.1.1\\:5"),
        Err(EndpointError::UnknownScheme { side: "client", .. })
    ));
    torsion::endpoints::register_client_scheme(
        "via",
        Rc::new(|reactor, args| {
            args.check(&[], 1)?;
            client_from_string(reactor, args.require("inner", Some(0))?)
        }),
    );
    let e = client_from_string(&mr, "via:tcp\\:10.1.1.1\\:5").unwrap();
    assert_eq!(e.describe(), "tcp:10.1.1.1:5");
}

// ---------------------------------------------------------------------- over TCP

/// A reactor whose resolver answers `addrs` for every name (to race chosen addresses).
#[derive(Clone)]
struct Fixed {
    r: Reactor,
    addrs: Vec<IpAddr>,
}

impl ReactorTcp for Fixed {
    fn listen_tcp_on(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, torsion::Error> {
        self.r.listen_tcp_on(addr, factory)
    }
    fn connect_tcp_to(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        self.r.connect_tcp_to(host, port, factory, timeout)
    }
}

impl EndpointReactor for Fixed {
    fn reactor(&self) -> &Reactor {
        &self.r
    }
    fn shared(&self) -> Rc<dyn EndpointReactor> {
        Rc::new(self.clone())
    }
    fn listen_tcp_backlog(
        &self,
        addr: SocketAddr,
        backlog: i32,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, torsion::Error> {
        self.r.listen_tcp_backlog(addr, backlog, factory)
    }
    fn connect_tcp_bound(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector {
        self.r.connect_tcp_bound(host, port, factory, timeout, bind)
    }
    fn resolve(&self, _host: &str, port: u16) -> Deferred<Vec<SocketAddr>> {
        Deferred::succeed(
            self.addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect(),
        )
    }
}

fn wait<T: Clone + 'static>(reactor: &Reactor, d: Deferred<T>) -> Result<T, Failure> {
    let out: Rc<RefCell<Option<Result<T, Failure>>>> = Rc::default();
    let o = out.clone();
    let _ = d.add_both(move |r| {
        *o.borrow_mut() = Some(r);
        Ok(())
    });
    run_until(reactor, secs(30), || out.borrow().is_some());
    let r = out.borrow_mut().take().unwrap();
    r
}

/// Runs the reactor until every connection is closed and no call is queued.
fn settle(reactor: &Reactor) {
    run_until(reactor, secs(30), || {
        reactor.descriptor_count() == 0 && reactor.queued_calls() == 0
    });
}

fn listen_local(reactor: &Reactor, ip: &str) -> ListeningPort {
    TcpServerEndpoint::new(reactor, 0)
        .interface(ip.parse().unwrap())
        .listen(echo())
        .try_result()
        .unwrap()
        .unwrap()
}

reactor_test! {
    fn tcp_endpoints_connect_and_echo(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let endpoint = TcpClientEndpoint::new(reactor, "127.0.0.1", port.port())
            .bind_address("127.0.0.1:0".parse().unwrap());
        let c = wait(reactor, endpoint.connect(|_| Hello::default())).unwrap();
        assert_eq!(c.protocol().borrow().made, 1);
        run_until(reactor, secs(30), || c.protocol().borrow().got == b"hello");
        assert_eq!(c.transport().host().as_tcp().unwrap().ip().to_string(), "127.0.0.1");
        c.transport().lose_connection();
        run_until(reactor, secs(30), || c.protocol().borrow().lost == 1);
        port.stop_listening();
        settle(reactor);
    }

    fn connect_is_awaitable(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let r = reactor.clone();
        let p = port.port();
        let got = reactor
            .run_until_complete(async move {
                let e = client_from_string(&r, &format!("tcp:127.0.0.1:{p}:timeout=10")).unwrap();
                let c = e.connect(|_| Hello::default()).await?;
                while c.protocol().borrow().got.len() < 5 {
                    torsion::task::defer_later(&r, ms(2), || Ok(())).await?;
                }
                c.transport().abort_connection();
                while c.protocol().borrow().lost == 0 {
                    torsion::task::defer_later(&r, ms(2), || Ok(())).await?;
                }
                let got = c.protocol().borrow().got.clone();
                Ok::<_, Failure>(got)
            })
            .unwrap();
        assert_eq!(got, b"hello");
        port.stop_listening();
        settle(reactor);
    }

    fn a_bind_address_that_is_not_ours_fails_the_connect(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let d = TcpClientEndpoint::new(reactor, "127.0.0.1", port.port())
            .bind_address("192.0.2.77:0".parse().unwrap())
            .connect(|_| Hello::default());
        let f = wait(reactor, d).unwrap_err();
        assert!(matches!(f.downcast_ref::<ConnectError>(), Some(ConnectError::Io(_))), "{f}");
        port.stop_listening();
        settle(reactor);
    }

    fn cancelled_connects_leave_nothing_behind(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        for delay in [0u64, 1, 5] {
            let d = TcpClientEndpoint::new(reactor, "127.0.0.1", port.port())
                .connect(|_| Hello::default());
            let fired = Rc::new(Cell::new(false));
            let f = fired.clone();
            let timer = reactor.call_later(ms(delay), move |_| f.set(true));
            run_until(reactor, secs(30), || fired.get() || d.called());
            let _ = timer.cancel();
            d.cancel();
            match d.try_result() {
                // Connected before the cancel: the connection is the caller's to close.
                Ok(Ok(c)) => c.transport().abort_connection(),
                Ok(Err(f)) => assert!(f.check::<Cancelled>(), "{f}"),
                Err(_) => panic!("a cancelled connect fires at once"),
            }
        }
        let fixed = Fixed { r: reactor.clone(), addrs: ips(&["::1", "127.0.0.1"]) };
        let d = HostnameEndpoint::new(&fixed, "both.test", port.port()).connect(|_| Hello::default());
        d.cancel();
        assert!(d.try_result().unwrap().is_err());
        port.stop_listening();
        settle(reactor);
    }

    fn refused_connect_fails_with_refused(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let n = port.port();
        port.stop_listening();
        let d = TcpClientEndpoint::new(reactor, "127.0.0.1", n).connect(|_| Hello::default());
        let f = wait(reactor, d).unwrap_err();
        assert!(matches!(f.downcast_ref::<ConnectError>(), Some(ConnectError::Refused)), "{f}");
    }

    fn happy_eyeballs_falls_back_to_ipv4_when_ipv6_refuses(reactor) {
        // IPv4 listens, IPv6 (same port) does not: the IPv6 attempt is refused, the IPv4 one
        // starts at once and wins.
        let port = listen_local(reactor, "127.0.0.1");
        let fixed = Fixed { r: reactor.clone(), addrs: ips(&["127.0.0.1", "::1"]) };
        let d = HostnameEndpoint::new(&fixed, "both.test", port.port())
            .attempt_delay(secs(20))
            .connect(|_| Hello::default());
        let c = wait(reactor, d).unwrap();
        assert_eq!(c.transport().peer().as_tcp().unwrap().ip().to_string(), "127.0.0.1");
        c.transport().abort_connection();
        run_until(reactor, secs(30), || c.protocol().borrow().lost == 1);
        port.stop_listening();
        settle(reactor);
    }

    fn happy_eyeballs_prefers_ipv6(reactor) {
        let v6 = listen_local(reactor, "::1");
        let fixed = Fixed { r: reactor.clone(), addrs: ips(&["127.0.0.1", "::1"]) };
        let d = HostnameEndpoint::new(&fixed, "both.test", v6.port()).connect(|_| Hello::default());
        let c = wait(reactor, d).unwrap();
        assert!(c.transport().peer().as_tcp().unwrap().is_ipv6());
        c.transport().abort_connection();
        run_until(reactor, secs(30), || c.protocol().borrow().lost == 1);
        v6.stop_listening();
        settle(reactor);
    }

    fn happy_eyeballs_all_refused_lists_both(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let n = port.port();
        port.stop_listening();
        let fixed = Fixed { r: reactor.clone(), addrs: ips(&["127.0.0.1", "::1"]) };
        let d = HostnameEndpoint::new(&fixed, "none.test", n).connect(|_| Hello::default());
        let f = wait(reactor, d).unwrap_err();
        let all = f.downcast_ref::<AttemptsFailed>().expect("AttemptsFailed");
        assert_eq!(all.attempts.len(), 2);
        assert!(all.attempts[0].0.is_ipv6());
        settle(reactor);
    }

    fn hostname_endpoint_resolves_on_the_pool(reactor) {
        let port = listen_local(reactor, "127.0.0.1");
        let d = HostnameEndpoint::new(reactor, "localhost", port.port()).connect(|_| Hello::default());
        match wait(reactor, d) {
            Ok(c) => {
                c.transport().abort_connection();
                run_until(reactor, secs(30), || c.protocol().borrow().lost == 1);
            }
            // localhost may also name ::1, where nothing listens: then both are listed.
            Err(f) => panic!("localhost: {f}"),
        }
        let d = HostnameEndpoint::new(reactor, "no-such-host.invalid", 80).connect(|_| Hello::default());
        let f = wait(reactor, d).unwrap_err();
        assert!(matches!(f.downcast_ref::<ConnectError>(), Some(ConnectError::HostNotFound(_))), "{f}");
        port.stop_listening();
        settle(reactor);
    }
}

// ------------------------------------------------------------------ the grammar, by property

mod grammar {
    use proptest::prelude::*;
    use torsion::endpoints::{quote, EndpointArgs};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any scheme, positional values and options, quoted, parse back to themselves.
        #[test]
        fn quoted_arguments_round_trip(
            scheme in "[a-z][a-z0-9]{0,6}",
            positional in proptest::collection::vec("[^\\x00]{0,12}", 0..4),
            options in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9]{0,8}", "[^\\x00]{0,12}"), 0..4),
        ) {
            let mut s = scheme.clone();
            for p in &positional {
                s.push(':');
                s.push_str(&quote(p));
            }
            for (k, v) in &options {
                s.push(':');
                s.push_str(k);
                s.push('=');
                s.push_str(&quote(v));
            }
            let a = EndpointArgs::parse(&s).unwrap();
            prop_assert_eq!(a.scheme, scheme);
            prop_assert_eq!(a.positional, positional);
            prop_assert_eq!(a.options, options);
        }

        /// Whatever the text, parsing answers (never panics), and a scheme is never empty.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,64}") {
            if let Ok(a) = EndpointArgs::parse(&text) {
                prop_assert!(!a.scheme.is_empty());
            }
        }
    }
}
