//! A line protocol on standard input and output (Twisted's `StandardIO`): each line read from
//! stdin is written back numbered and in capitals; at the end of the input a summary line is
//! written and the program exits.
//!
//! ```text
//! $ printf 'hello\nworld\n' | cargo run --example stdio_lines
//! 1: HELLO
//! 2: WORLD
//! 2 lines, 10 bytes
//! ```
//!
//! Works with stdin from a pipe, a file (`< file`, read in chunks: files cannot be polled) or a
//! terminal (type lines, Ctrl-D to end). `TORSION_REACTOR` picks the backend.

use torsion::{Context, HalfClose, Protocol, Reactor, Reason};

/// Splits the input into lines (a simple inline splitter: at most 64 KiB per line).
struct Lines {
    pending: Vec<u8>,
    lines: u64,
    bytes: u64,
}

const MAX_LINE: usize = 64 * 1024;

impl Lines {
    fn line(&mut self, cx: &mut Context<'_>, line: &[u8]) {
        self.lines += 1;
        self.bytes += line.len() as u64;
        let mut out = format!("{}: ", self.lines).into_bytes();
        out.extend(line.to_ascii_uppercase());
        out.push(b'\n');
        cx.transport().write(&out);
    }
}

impl Protocol for Lines {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.pending.extend_from_slice(data);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(cx, &line);
        }
        if self.pending.len() > MAX_LINE {
            cx.transport().write(b"error: line too long\n");
            cx.transport().lose_connection();
        }
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        if !self.pending.is_empty() {
            // The last line had no newline.
            let rest = std::mem::take(&mut self.pending);
            self.line(cx, &rest);
        }
        let summary = format!("{} lines, {} bytes\n", self.lines, self.bytes);
        cx.transport().write(summary.as_bytes());
        cx.transport().lose_connection();
        HalfClose::KeepWriting
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        if !reason.is_clean() {
            eprintln!("stdio_lines: {reason}");
        }
        let _ = cx.reactor().stop();
    }
}

fn main() -> Result<(), torsion::Error> {
    let reactor = Reactor::new()?;
    torsion::stdio::start(
        &reactor,
        Lines {
            pending: Vec::new(),
            lines: 0,
            bytes: 0,
        },
    )?;
    reactor.run()
}
