//! A line-based chat server: each line a client sends goes to every other client.
//!
//! The factory keeps the set of connected transports; one connection's `data_received` writes
//! to all the others (the classic Twisted chat server).
//!
//! ```text
//! cargo run --example chat -- [--port 8001]
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use torsion::{Context, Factory, Protocol, Reactor, Reason, Transport};

/// The connected clients, shared by every protocol the factory builds.
#[derive(Default)]
struct Room {
    clients: RefCell<Vec<Transport>>,
}

struct Chatter {
    room: Rc<Room>,
    /// Bytes of a line not yet ended by '\n'.
    partial: Vec<u8>,
    me: Option<Transport>,
}

impl Protocol for Chatter {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        t.write(b"Welcome! Every line you type goes to everybody else.\n");
        self.room.clients.borrow_mut().push(t.clone());
        self.me = Some(t.clone());
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let prefix = format!("<{}> ", t.peer());
            for other in self.room.clients.borrow().iter().filter(|c| *c != t) {
                other.write_sequence(&[prefix.as_bytes(), &line]);
            }
        }
        if self.partial.len() > 64 * 1024 {
            t.write(b"Line too long; goodbye.\n");
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _cx: &mut Context<'_>, _: Reason) {
        let me = self.me.take();
        self.room
            .clients
            .borrow_mut()
            .retain(|c| Some(c) != me.as_ref());
    }
}

fn main() -> Result<(), torsion::Error> {
    let port: u16 = match std::env::args().nth(1).as_deref() {
        Some("--port") => std::env::args()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .unwrap_or(8001),
        _ => 8001,
    };
    let reactor = Reactor::new()?;
    let factory = Factory::with_state(Room::default(), |room, _peer| Chatter {
        room: room.clone(),
        partial: Vec::new(),
        me: None,
    });
    let listening = reactor.listen_tcp(("127.0.0.1", port), factory)?;
    println!("Chat server on {}.", listening.address());
    reactor.run()
}
