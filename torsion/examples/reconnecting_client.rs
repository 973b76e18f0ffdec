//! A client that stays connected (Twisted's `ReconnectingClientFactory`): it prints what the
//! server sends, and when an attempt fails or the connection ends it connects again, waiting e
//! times longer after each failure (with Twisted's jitter), from `--initial-delay` up to
//! `--max-delay` seconds. A connection made resets the wait. A connection idle for
//! `--idle-timeout` seconds (nothing either way) is dropped and made again.
//!
//! ```text
//! cargo run --example reconnecting_client -- [HOST] PORT [--initial-delay S] [--max-delay S]
//!     [--max-retries N] [--connections N] [--idle-timeout S]
//! cargo run --example reconnecting_client -- 8001 &   # nobody there: it retries...
//! cargo run --example chat -- --port 8001              # ...and connects once the chat is up
//! ```
//!
//! Stops after `--connections` connections ended, when `--max-retries` consecutive retries
//! failed (exit status 1), or on Ctrl-C.

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion::protocol::reconnect::ReconnectingClientFactory;
use torsion::protocols::policies::TimeoutFactory;
use torsion::{Context, Factory, Protocol, Reactor, Reason};

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    host: String,
    port: u16,
    initial_delay: f64,
    max_delay: f64,
    max_retries: Option<u32>,
    connections: Option<u64>,
    idle_timeout: Duration,
}

const USAGE: &str = "usage: reconnecting_client [HOST] PORT [--initial-delay S] [--max-delay S] \
                     [--max-retries N] [--connections N] [--idle-timeout S]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut o = Options {
        host: "127.0.0.1".into(),
        port: 0,
        initial_delay: 1.0,
        max_delay: 3600.0,
        max_retries: None,
        connections: None,
        idle_timeout: Duration::from_secs(300),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with("--") {
            positional.push(a.clone());
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let number = |what: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .map_err(|_| format!("{a}: {v:?} is not {what}"))
        };
        match a.as_str() {
            "--initial-delay" => o.initial_delay = number("a number of seconds")?,
            "--max-delay" => o.max_delay = number("a number of seconds")?,
            "--max-retries" => {
                o.max_retries = Some(
                    v.parse()
                        .map_err(|_| format!("{a}: {v:?} is not a count"))?,
                )
            }
            "--connections" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("{a}: {v:?} is not a count"))?;
                if n == 0 {
                    return Err(format!("{a} must be at least 1"));
                }
                o.connections = Some(n);
            }
            "--idle-timeout" => {
                let s = number("a number of seconds")?;
                o.idle_timeout = Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("{a} must be a positive number of seconds, not {v}"))?;
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let port = match positional.as_slice() {
        [port] => port,
        [host, port] => {
            o.host = host.clone();
            port
        }
        [] => return Err("a PORT is needed".into()),
        _ => return Err("too many arguments".into()),
    };
    o.port = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
    Ok(o)
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `--connections` connections were made and ended.
    Done,
    /// `--max-retries` retries failed in a row.
    GaveUp,
}

type Out = Rc<dyn Fn(String)>;
type Client = ReconnectingClientFactory<TimeoutFactory<Factory<Session>>>;

/// What the protocols share.
struct Session {
    out: Out,
    made: Cell<u64>,
    ended: Cell<u64>,
    limit: Option<u64>,
    outcome: Rc<Cell<Option<Outcome>>>,
    /// The reconnecting factory (weak: it owns this session).
    client: RefCell<Weak<Client>>,
}

/// Prints what the server sends.
struct Printer {
    session: Rc<Session>,
    n: u64,
}

impl Protocol for Printer {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let s = &self.session;
        s.made.set(s.made.get() + 1);
        self.n = s.made.get();
        (s.out)(format!(
            "[{}] connected to {}",
            self.n,
            cx.transport().peer()
        ));
    }

    fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        for line in text.lines() {
            (self.session.out)(format!("[{}] {line}", self.n));
        }
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        let s = &self.session;
        (s.out)(format!("[{}] connection ended: {reason}", self.n));
        s.ended.set(s.ended.get() + 1);
        if s.limit.is_some_and(|l| s.ended.get() >= l) {
            if let Some(c) = s.client.borrow().upgrade() {
                c.stop_trying();
            }
            s.outcome.set(Some(Outcome::Done));
            let _ = cx.reactor().stop();
        }
    }
}

/// Starts connecting; the returned cell is filled when the run ends.
fn start(reactor: &Reactor, o: &Options, out: Out) -> Result<Rc<Cell<Option<Outcome>>>, String> {
    let outcome = Rc::new(Cell::new(None));
    let session = Session {
        out: out.clone(),
        made: Cell::new(0),
        ended: Cell::new(0),
        limit: o.connections,
        outcome: outcome.clone(),
        client: RefCell::new(Weak::new()),
    };
    let failed_out = out.clone();
    let user = Factory::with_state(session, |s, _| Printer {
        session: s.clone(),
        n: 0,
    })
    .on_client_connection_failed(move |_, c, reason| {
        failed_out(format!(
            "could not connect to {}: {reason}",
            c.destination()
        ));
    });
    let session = user.state().clone();
    let timed = TimeoutFactory::new(user, o.idle_timeout).map_err(|e| e.to_string())?;
    // A Handle, not a Reactor: the factory must not keep its reactor alive.
    let (gave_up, r) = (outcome.clone(), reactor.handle());
    let retries = o.max_retries.unwrap_or(0);
    let client = ReconnectingClientFactory::new(reactor, timed)
        .initial_delay(o.initial_delay)
        .and_then(|c| c.max_delay(o.max_delay))
        .map_err(|e| e.to_string())?
        .max_retries(o.max_retries)
        .on_give_up(move |c| {
            out(format!(
                "giving up on {} after {retries} retries",
                c.destination()
            ));
            gave_up.set(Some(Outcome::GaveUp));
            let _ = r.stop();
        });
    let client = Rc::new(client);
    *session.client.borrow_mut() = Rc::downgrade(&client);
    reactor.connect_tcp(&o.host, o.port, client, Duration::from_secs(30));
    Ok(outcome)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("reconnecting_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // torsion logs each retry (and its delay) at INFO, problems at WARN: to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reconnecting_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match start(&reactor, &opts, Rc::new(|line| println!("{line}"))) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("reconnecting_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = reactor.run() {
        eprintln!("reconnecting_client: {e}");
        return ExitCode::FAILURE;
    }
    match outcome.get() {
        Some(Outcome::GaveUp) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use torsion::testing::run_until;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse(&args(&["example.com", "79", "--max-retries", "3"])).unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.max_retries),
            ("example.com", 79, Some(3))
        );
        assert_eq!(o.initial_delay, 1.0);
        assert_eq!(parse(&args(&["8000"])).unwrap().host, "127.0.0.1");
        for (bad, says) in [
            (&["0"][..], "is not a port"),
            (&["x"][..], "is not a port"),
            (&[][..], "a PORT is needed"),
            (&["1", "2", "3"][..], "too many"),
            (&["80", "--max-retries", "-1"][..], "is not a count"),
            (&["80", "--connections", "0"][..], "at least 1"),
            (&["80", "--idle-timeout", "0"][..], "positive"),
            (&["80", "--idle-timeout", "nan"][..], "positive"),
            (&["80", "--initial-delay"][..], "needs a value"),
            (&["80", "--frobnicate", "1"][..], "unknown option"),
        ] {
            let e = parse(&args(bad)).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_delays_are_refused_with_the_factorys_error() {
        let reactor = Reactor::new().unwrap();
        let mut o = parse(&args(&["80", "--initial-delay", "-2"])).unwrap();
        let e = start(&reactor, &o, Rc::new(|_| {})).unwrap_err();
        assert_eq!(e, "initial_delay must not be negative, not -2");
        o.initial_delay = 1.0;
        o.max_delay = f64::INFINITY;
        let e = start(&reactor, &o, Rc::new(|_| {})).unwrap_err();
        assert!(e.contains("max_delay must be a finite number"), "{e}");
    }

    /// A port nobody listens on (yet).
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    struct Hello;
    impl Protocol for Hello {
        fn connection_made(&mut self, cx: &mut Context<'_>) {
            cx.transport().write(b"hello\nagain\n");
            cx.transport().lose_connection();
        }
        fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }

    type Lines = Rc<RefCell<Vec<String>>>;

    fn collect() -> (Lines, Out) {
        let lines: Lines = Rc::default();
        let l = lines.clone();
        (lines, Rc::new(move |s| l.borrow_mut().push(s)))
    }

    torsion::reactor_test! {
        fn connects_once_the_server_is_up(reactor) {
            let port = free_port();
            let o = parse(&args(&[
                &port.to_string(),
                "--initial-delay", "0.01",
                "--max-delay", "0.2",
                "--connections", "2",
            ]))
            .unwrap();
            let (lines, out) = collect();
            let outcome = start(reactor, &o, out).unwrap();
            let failures = || lines.borrow().iter().filter(|l| l.starts_with("could not")).count();
            run_until(reactor, Duration::from_secs(60), || failures() >= 2);
            let server = reactor
                .listen_tcp(("127.0.0.1", port), Factory::for_protocol(|| Hello))
                .unwrap();
            run_until(reactor, Duration::from_secs(60), || outcome.get().is_some());
            assert_eq!(outcome.get(), Some(Outcome::Done));
            let lines = lines.borrow();
            let served: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with('['))
                .map(String::as_str)
                .collect();
            assert_eq!(served.len(), 8, "{lines:#?}");
            assert!(served[0].starts_with("[1] connected to 127.0.0.1:"));
            assert_eq!(&served[1..3], ["[1] hello", "[1] again"]);
            assert!(served[3].starts_with("[1] connection ended"));
            assert!(served[4].starts_with("[2] connected to"));
            assert!(lines[0].contains("connection was refused"), "{lines:#?}");
            server.stop_listening();
            run_until(reactor, Duration::from_secs(10), || reactor.descriptor_count() == 0);
        }
    }

    torsion::reactor_test! {
        fn gives_up_after_max_retries(reactor) {
            let port = free_port();
            let o = parse(&args(&[
                &port.to_string(),
                "--initial-delay", "0.01",
                "--max-retries", "2",
            ]))
            .unwrap();
            let (lines, out) = collect();
            let outcome = start(reactor, &o, out).unwrap();
            run_until(reactor, Duration::from_secs(60), || outcome.get().is_some());
            assert_eq!(outcome.get(), Some(Outcome::GaveUp));
            let lines = lines.borrow();
            // The first attempt and two retries failed.
            assert_eq!(lines.len(), 4, "{lines:#?}");
            assert!(lines[3].starts_with("giving up on 127.0.0.1:"), "{lines:#?}");
            assert!(lines[3].ends_with("after 2 retries"));
        }
    }
}
