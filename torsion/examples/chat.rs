//! A line-based chat server: each line a client sends goes to every other client.
//!
//! The factory keeps the set of connected transports; each connection is a
//! [`LineReceiver`] whose handler writes every line to all the others (the classic Twisted
//! chat server). A member that stops reading is reset once 1 MiB waits for it, so memory stays
//! bounded whatever the members do.
//!
//! ```text
//! cargo run --example chat -- [--port 8001]
//! ```

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use torsion::protocols::basic::{FrameError, LineContext, LineHandler, LineReceiver};
use torsion::{Factory, Reactor, Reason, Transport};

/// A client whose unfinished line grows past this is told goodbye and disconnected.
const MAX_LINE: usize = 64 * 1024;

/// A client that falls this far behind (lines sent to it that it has not read) is reset: one
/// silent member must not grow the server without limit.
const MAX_BEHIND: usize = 1 << 20;

/// The connected clients, shared by every protocol the factory builds. A [`Transport`]
/// compares and hashes by identity (clones are the same connection), so the set holds each
/// connection once.
#[derive(Default)]
struct Room {
    clients: RefCell<HashSet<Transport>>,
}

struct Chatter {
    room: Rc<Room>,
}

impl LineHandler for Chatter {
    fn connection_made(&mut self, cx: &mut LineContext<'_, '_>) {
        cx.send_line(b"Welcome! Every line you type goes to everybody else.");
        self.room
            .clients
            .borrow_mut()
            .insert(cx.transport().clone());
    }

    fn line_received(&mut self, cx: &mut LineContext<'_, '_>, line: &[u8]) {
        let me = cx.transport();
        let prefix = format!("<{}> ", me.peer());
        for other in self.room.clients.borrow().iter().filter(|c| *c != me) {
            other.write_sequence(&[prefix.as_bytes(), line, b"\n"]);
        }
    }

    fn line_length_exceeded(&mut self, cx: &mut LineContext<'_, '_>, _: &FrameError) {
        cx.send_line(b"Line too long; goodbye.");
        cx.transport().lose_connection();
    }

    fn connection_lost(&mut self, cx: &mut LineContext<'_, '_>, _: Reason) {
        // The transport in `connection_lost` is the one `connection_made` had: no need to
        // keep our own.
        self.room.clients.borrow_mut().remove(cx.transport());
    }
}

/// The chat server's factory: one room for every connection; lines end with `\n`.
fn chat_factory() -> Factory<Room> {
    Factory::with_state(Room::default(), |room, _peer| {
        LineReceiver::new(Chatter { room: room.clone() })
            .with_delimiter(b"\n")
            .expect("a non-empty delimiter")
            .with_max_length(MAX_LINE)
    })
}

fn main() {
    let mut port = 8001u16;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let p = args
                    .next()
                    .unwrap_or_else(|| usage("--port takes a number"));
                port = p
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--port: {p:?} is not a port (0-65535)")));
            }
            "-v" | "--verbose" => verbose = true,
            _ => usage(&format!("unexpected argument {a:?}")),
        }
    }
    // torsion's warnings and errors (and everything with -v) go to stderr.
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
    if let Err(e) = serve(port) {
        eprintln!("chat: error: {e}");
        std::process::exit(1);
    }
}

fn serve(port: u16) -> Result<(), torsion::Error> {
    let reactor = Reactor::new()?;
    let opts = torsion::tcp::ListenOptions {
        max_write_buffer: Some(MAX_BEHIND),
        ..Default::default()
    };
    let listening = reactor.listen_tcp_with(("127.0.0.1", port), chat_factory(), opts)?;
    println!("Chat server on {}.", listening.address());
    reactor.run()
}

fn usage(msg: &str) -> ! {
    eprintln!("chat: {msg}\nusage: chat [--port N] [-v]");
    std::process::exit(2)
}

/// The chat protocol on the testing kit: clients connected through memory, no socket.
#[cfg(test)]
mod tests {
    use super::*;
    use torsion::testing::{
        connected_pair_with, flush_all, IoPump, MemoryReactor, StringTransport,
    };
    use torsion::{Address, Context, Protocol, ProtocolFactory};

    const WELCOME: &[u8] = b"Welcome! Every line you type goes to everybody else.\n";

    /// What a test client received, and whether its connection ended.
    #[derive(Default)]
    struct Screen {
        text: RefCell<Vec<u8>>,
        lost: RefCell<Option<Reason>>,
    }

    impl Screen {
        fn take(&self) -> Vec<u8> {
            std::mem::take(&mut *self.text.borrow_mut())
        }
    }

    struct Client(Rc<Screen>);

    impl Protocol for Client {
        fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
            self.0.text.borrow_mut().extend_from_slice(data);
        }

        fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
            *self.0.lost.borrow_mut() = Some(reason);
        }
    }

    /// A chat server with the named clients connected, each through its own pair; every
    /// client has read its welcome.
    struct Chat {
        _mr: MemoryReactor,
        factory: Factory<Room>,
        pumps: Vec<IoPump>,
        screens: Vec<Rc<Screen>>,
    }

    impl Chat {
        fn with(names: &[&str]) -> Chat {
            let mr = MemoryReactor::new().unwrap();
            let factory = chat_factory();
            let mut pumps = Vec::new();
            let mut screens = Vec::new();
            for name in names {
                let screen = Rc::new(Screen::default());
                let s = screen.clone();
                let client = Factory::for_protocol(move || Client(s.clone()));
                let pump = connected_pair_with(
                    mr.reactor(),
                    &factory,
                    &client,
                    Address::memory("chat"),
                    Address::memory(*name),
                )
                .unwrap();
                pumps.push(pump);
                screens.push(screen);
            }
            let chat = Chat {
                _mr: mr,
                factory,
                pumps,
                screens,
            };
            chat.flush();
            for s in &chat.screens {
                assert_eq!(s.take(), WELCOME);
            }
            chat
        }

        fn flush(&self) {
            flush_all(&self.pumps.iter().collect::<Vec<_>>());
        }

        /// Client `i` types `text`.
        fn say(&self, i: usize, text: &[u8]) {
            self.pumps[i].client_transport().write(text);
            self.flush();
        }

        fn seated(&self) -> usize {
            self.factory.state().clients.borrow().len()
        }
    }

    #[test]
    fn a_newcomer_is_welcomed_and_seated() {
        let factory = chat_factory();
        let mut p = factory.build_protocol(&Address::memory("alice")).unwrap();
        let t = StringTransport::new().unwrap();
        t.connect(&mut *p);
        assert_eq!(t.value(), WELCOME);
        assert!(factory.state().clients.borrow().contains(t.transport()));
        t.lose(&mut *p, Reason::ConnectionDone);
        assert_eq!(factory.state().clients.borrow().len(), 0);
    }

    #[test]
    fn a_line_reaches_every_other_client_and_not_the_sender() {
        let chat = Chat::with(&["alice", "bob", "carol"]);
        assert_eq!(chat.seated(), 3);
        chat.say(0, b"hello, room\n");
        assert_eq!(chat.screens[0].take(), b"");
        assert_eq!(chat.screens[1].take(), b"<memory:alice> hello, room\n");
        assert_eq!(chat.screens[2].take(), b"<memory:alice> hello, room\n");
        chat.say(2, b"hi alice\nhi bob\n");
        assert_eq!(
            chat.screens[0].take(),
            b"<memory:carol> hi alice\n<memory:carol> hi bob\n"
        );
        assert_eq!(
            chat.screens[1].take(),
            b"<memory:carol> hi alice\n<memory:carol> hi bob\n"
        );
        assert_eq!(chat.screens[2].take(), b"");
    }

    #[test]
    fn partial_lines_are_joined() {
        let chat = Chat::with(&["alice", "bob"]);
        chat.say(0, b"hel");
        assert_eq!(
            chat.screens[1].take(),
            b"",
            "nothing before the end of the line"
        );
        chat.say(0, b"lo\nwor");
        assert_eq!(chat.screens[1].take(), b"<memory:alice> hello\n");
        // A byte at a time, through the pump.
        chat.pumps[0].set_chunk_size(Some(1));
        chat.say(0, b"ld\n");
        assert_eq!(chat.screens[1].take(), b"<memory:alice> world\n");
    }

    #[test]
    fn a_client_that_leaves_is_removed() {
        let chat = Chat::with(&["alice", "bob", "carol"]);
        chat.pumps[1].client_transport().lose_connection();
        chat.flush();
        assert!(chat.screens[1].lost.borrow().as_ref().unwrap().is_clean());
        assert!(!chat.pumps[1].server_transport().connected());
        assert_eq!(chat.seated(), 2);
        chat.say(0, b"is bob gone?\n");
        assert_eq!(chat.screens[2].take(), b"<memory:alice> is bob gone?\n");
        assert_eq!(chat.screens[1].take(), b"");
        // A client that vanishes uncleanly is removed too.
        chat.pumps[2].client_transport().abort_connection();
        chat.flush();
        assert_eq!(chat.seated(), 1);
    }

    #[test]
    fn an_over_long_line_disconnects_its_sender_only() {
        let chat = Chat::with(&["alice", "bob"]);
        // Exactly the limit, unfinished: still welcome.
        chat.say(0, &vec![b'a'; MAX_LINE]);
        assert!(chat.pumps[0].server_transport().connected());
        assert_eq!(chat.screens[0].take(), b"");
        // Its end arrives: the whole line goes out.
        chat.say(0, b"\n");
        let mut line = b"<memory:alice> ".to_vec();
        line.extend(vec![b'a'; MAX_LINE]);
        line.push(b'\n');
        assert_eq!(chat.screens[1].take(), line);
        // One byte more than the limit without an end: goodbye.
        chat.say(1, &vec![b'b'; MAX_LINE + 1]);
        assert_eq!(chat.screens[1].take(), b"Line too long; goodbye.\n");
        assert!(chat.screens[1].lost.borrow().as_ref().unwrap().is_clean());
        assert_eq!(chat.screens[0].take(), b"");
        assert_eq!(chat.seated(), 1);
    }
}
