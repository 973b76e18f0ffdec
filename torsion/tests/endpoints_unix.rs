//! `unix:` endpoints: strings to endpoints to an echo over real Unix sockets on every backend
//! (each test ends with the leak check), abstract names, errors, and the memory reactor's
//! recording and playing of Unix listens and connects.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use torsion::endpoints::{
    client_from_string, server_from_string, ClientEndpoint, ClientEndpointExt, EndpointError,
    ServerEndpoint, UnixClientEndpoint, UnixServerEndpoint,
};
use torsion::interfaces::UnixAddress;
use torsion::testing::{run_until, MemoryReactor};
use torsion::{
    reactor_test, Address, ConnectError, Context, Deferred, Error, Factory, Failure, Protocol,
    ProtocolFactory, Reactor, Reason,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A fresh directory for one test's socket files (removed on drop).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("torsion-ep-unix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Echoes; counts the connections that ended.
struct Echo(Rc<Cell<u32>>);

impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, _: Reason) {
        self.0.set(self.0.get() + 1);
    }
}

fn echo(lost: &Rc<Cell<u32>>) -> Rc<dyn ProtocolFactory> {
    let lost = lost.clone();
    Rc::new(Factory::for_protocol(move || Echo(lost.clone())))
}

/// Says `greeting` once connected; closes once it has it back.
struct Greeter {
    greeting: &'static [u8],
    got: Vec<u8>,
    lost: bool,
}

impl Greeter {
    fn new(greeting: &'static [u8]) -> Greeter {
        Greeter {
            greeting,
            got: Vec::new(),
            lost: false,
        }
    }
}

impl Protocol for Greeter {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(self.greeting);
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.greeting.len() {
            cx.transport().lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, _: Reason) {
        self.lost = true;
    }
}

/// Runs the reactor until `d` fired; its result.
fn wait<T: Clone + 'static>(reactor: &Reactor, d: Deferred<T>) -> Result<T, Failure> {
    let out: Rc<RefCell<Option<Result<T, Failure>>>> = Rc::default();
    let o = out.clone();
    let _ = d.add_both(move |r| {
        *o.borrow_mut() = Some(r);
        Ok(())
    });
    run_until(reactor, LIMIT, || out.borrow().is_some());
    let r = out.borrow_mut().take().unwrap();
    r
}

/// Connects a [`Greeter`] through `client`, and waits for the echo and both ends' close.
fn echo_through(
    reactor: &Reactor,
    client: &dyn ClientEndpoint,
    server_lost: &Rc<Cell<u32>>,
    greeting: &'static [u8],
) {
    let before = server_lost.get();
    let c = wait(reactor, client.connect(move |_| Greeter::new(greeting))).expect("connected");
    run_until(reactor, LIMIT, || {
        c.protocol().borrow().lost && server_lost.get() > before
    });
    assert_eq!(c.protocol().borrow().got, greeting);
}

reactor_test! {
    fn strings_to_endpoints_to_an_echo_on_a_path(reactor) {
        let dir = Dir::new("path");
        let path = dir.join("echo.sock");
        let lost = Rc::new(Cell::new(0));
        let server = server_from_string(reactor, &format!("unix:{}:mode=600:backlog=7", path.display())).unwrap();
        assert_eq!(server.describe(), format!("unix:{} (mode 600, backlog 7, lock file)", path.display()));
        let port = wait(reactor, server.listen(echo(&lost))).unwrap();
        assert_eq!(port.address(), Address::Unix(UnixAddress::path(&path)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // lockfile=1 is the string's default: the lock names this process.
        let lock = dir.join("echo.sock.lock");
        assert_eq!(std::fs::read_link(&lock).unwrap().to_str(), Some(&*std::process::id().to_string()));

        // checkPID=1 passes: the lock's process (this one) is alive.
        let client = client_from_string(reactor, &format!("unix:path={}:timeout=10:checkPID=1", path.display())).unwrap();
        assert_eq!(client.describe(), format!("unix:{}", path.display()));
        echo_through(reactor, &*client, &lost, b"hello over a unix endpoint");
        // Twice: the endpoint is reusable.
        echo_through(reactor, &*client, &lost, b"again");

        port.stop_listening();
        assert!(!path.exists() && !lock.exists(), "the socket and lock files go with the port");
    }

    fn an_abstract_name(reactor) {
        let name = format!("torsion-ep-{}-abstract", std::process::id());
        let lost = Rc::new(Cell::new(0));
        // lockfile is for paths: the string's default of 1 is not applied to an abstract name.
        let server = server_from_string(reactor, &format!("unix:@{name}")).unwrap();
        assert_eq!(server.describe(), format!("unix:@{name} (mode 666, backlog 50)"));
        let port = wait(reactor, server.listen(echo(&lost))).unwrap();
        assert_eq!(port.address().to_string(), format!("unix:@{name}"));
        // A second listener on the same name fails through the Deferred.
        let again = wait(reactor, server.listen(echo(&lost))).unwrap_err();
        match again.downcast_ref::<Error>() {
            Some(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
            other => panic!("second listener: {other:?} ({again})"),
        }
        let client = client_from_string(reactor, &format!("unix:@{name}:timeout=10")).unwrap();
        echo_through(reactor, &*client, &lost, b"abstract");
        // Built by hand, the same.
        let by_hand = UnixClientEndpoint::new(reactor, UnixAddress::abstract_name(&name));
        echo_through(reactor, &by_hand, &lost, b"by hand");
        port.stop_listening();
    }

    fn connect_and_listen_failures_are_typed(reactor) {
        let dir = Dir::new("errors");
        // Nothing at the path.
        let missing = dir.join("nobody.sock");
        let client = client_from_string(reactor, &format!("unix:{}", missing.display())).unwrap();
        let f = wait(reactor, client.connect(|_| Greeter::new(b"x"))).unwrap_err();
        match f.downcast_ref::<ConnectError>() {
            Some(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
            other => panic!("missing path: {other:?} ({f})"),
        }
        // A socket file nobody listens on: refused.
        let dead = dir.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let f = wait(reactor, UnixClientEndpoint::new(reactor, dead.as_path()).connect(|_| Greeter::new(b"x"))).unwrap_err();
        assert!(matches!(f.downcast_ref::<ConnectError>(), Some(ConnectError::Refused)), "{f}");
        // checkPID=1 without a lock file fails at once, without connecting.
        let lost = Rc::new(Cell::new(0));
        let live = dir.join("nolock.sock");
        let port = wait(reactor, UnixServerEndpoint::new(reactor, live.as_path()).listen(echo(&lost))).unwrap();
        let checked = client_from_string(reactor, &format!("unix:{}:checkPID=1", live.display())).unwrap();
        let d = checked.connect(|_| Greeter::new(b"x"));
        let f = d.try_result().expect("fails at once").unwrap_err();
        assert!(f.to_string().contains("checkPID") || format!("{:?}", f.downcast_ref::<ConnectError>()).contains("checkPID"), "{f:?}");
        // Without checkPID the same server answers.
        echo_through(reactor, &UnixClientEndpoint::new(reactor, live.as_path()), &lost, b"no check");
        port.stop_listening();
        // A directory that does not exist: the listen Deferred fails with the system error.
        let nowhere = server_from_string(reactor, &format!("unix:{}", dir.join("no/such/dir.sock").display())).unwrap();
        let f = wait(reactor, nowhere.listen(echo(&lost))).unwrap_err();
        assert!(matches!(f.downcast_ref::<Error>(), Some(Error::Io(_))), "{f}");
        // A mode out of range, given by hand: the listen fails, naming it.
        let f = wait(reactor, UnixServerEndpoint::new(reactor, dir.join("m.sock").as_path()).mode(0o17777).listen(echo(&lost))).unwrap_err();
        assert!(matches!(f.downcast_ref::<Error>(), Some(Error::BadAddress(m)) if m.contains("mode")), "{f}");
        assert!(!dir.join("m.sock").exists());
        // Cancelling a connect stops it: nothing is left behind (the leak check).
        let d = UnixClientEndpoint::new(reactor, missing.as_path()).connect(|_| Greeter::new(b"x"));
        d.cancel();
        let f = wait(reactor, d).unwrap_err();
        assert!(f.to_string().contains("cancel"), "{f}");
    }
}

fn parse_error(s: &str, server: bool) -> EndpointError {
    let mr = MemoryReactor::new().unwrap();
    if server {
        server_from_string(&mr, s).map(|_| ()).unwrap_err()
    } else {
        client_from_string(&mr, s).map(|_| ()).unwrap_err()
    }
}

#[test]
fn bad_strings_name_the_bad_part() {
    let _serial = torsion::testing::serial();
    assert_eq!(
        parse_error("unix:/p:mode=8", true).to_string(),
        "mode: \"8\" is not a number"
    );
    assert_eq!(
        parse_error("unix:/p:mode=1000", true).to_string(),
        "mode: 1000 is out of range (octal 0 to 777)"
    );
    assert_eq!(
        parse_error("unix:/p:backlog=0", true).to_string(),
        "backlog: 0 is out of range (1 to 65535)"
    );
    assert_eq!(
        parse_error("unix:/p:lockfile=2", true).to_string(),
        "lockfile: 2 is out of range (0 or 1)"
    );
    assert_eq!(
        parse_error("unix:", true).to_string(),
        "unix: missing argument \"path\""
    );
    assert_eq!(
        parse_error("unix:mode=600", true).to_string(),
        "unix: missing argument \"path\""
    );
    assert_eq!(
        parse_error("unix:", false).to_string(),
        "unix: missing argument \"path\""
    );
    assert_eq!(
        parse_error("unix:/p:timeout=0", false).to_string(),
        "timeout: 0 is out of range (more than 0 and at most 86400 seconds)"
    );
    assert_eq!(
        parse_error("unix:/p:checkPID=yes", false).to_string(),
        "checkPID: yes is out of range (0 or 1)"
    );
    assert!(matches!(
        parse_error("unix:/p:mode=600", false),
        EndpointError::UnknownOption { .. }
    ));
}

#[test]
fn the_memory_reactor_records_and_plays_unix_endpoints() {
    let _serial = torsion::testing::serial();
    let mr = MemoryReactor::new().unwrap();
    let lost = Rc::new(Cell::new(0));

    let server =
        server_from_string(&mr, "unix:/run/app.sock:mode=660:backlog=9:lockfile=0").unwrap();
    let port = server.listen(echo(&lost)).try_result().unwrap().unwrap();
    let rec = &mr.unix_servers()[0];
    assert_eq!(rec.addr, UnixAddress::path("/run/app.sock"));
    assert_eq!(
        (rec.options.mode, rec.options.backlog, rec.options.lock),
        (Some(0o660), 9, false)
    );
    assert_eq!(port.address().to_string(), "unix:/run/app.sock");
    port.stop_listening();
    assert!(mr.tcp_servers().is_empty(), "nothing went to TCP");

    // Connect, play the connection through memory, echo.
    let client = client_from_string(&mr, "unix:/run/app.sock:timeout=4").unwrap();
    let d = client.connect(|_| Greeter::new(b"ping"));
    assert!(!d.called());
    let attempt = mr.unix_clients()[0].clone();
    assert_eq!(attempt.addr, UnixAddress::path("/run/app.sock"));
    assert_eq!(attempt.timeout, Duration::from_secs(4));
    assert!(attempt.pending());
    let pump = attempt.accept(&*echo(&lost)).unwrap();
    let c = d.try_result().unwrap().unwrap();
    assert_eq!(c.transport().peer().to_string(), "unix:/run/app.sock");
    pump.flush();
    assert_eq!(c.protocol().borrow().got, b"ping");
    assert!(c.protocol().borrow().lost);
    assert_eq!(lost.get(), 1);
    assert!(attempt.accept(&*echo(&lost)).is_none(), "played once");

    // A failed attempt fails the Deferred with its reason.
    let d = client.connect(|_| Greeter::new(b"x"));
    assert!(mr.unix_clients()[1].fail(ConnectError::Refused));
    let f = d.try_result().unwrap().unwrap_err();
    assert!(matches!(
        f.downcast_ref::<ConnectError>(),
        Some(ConnectError::Refused)
    ));

    // Cancelling the Deferred stops the attempt.
    let d = client.connect(|_| Greeter::new(b"x"));
    assert!(mr.unix_clients()[2].pending());
    d.cancel();
    assert!(!mr.unix_clients()[2].pending());

    // The ReactorUnix interface is recorded too.
    use torsion::interfaces::ReactorUnix;
    let p = mr
        .listen_unix_on(UnixAddress::abstract_name("x"), echo(&lost))
        .unwrap();
    assert_eq!(
        mr.unix_servers()[1].options,
        torsion::unix::UnixListenOptions::default()
    );
    p.stop_listening();
    assert!(mr.tcp_clients().is_empty());
}
