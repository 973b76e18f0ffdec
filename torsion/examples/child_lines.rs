//! Runs a child process and processes its output line by line (Twisted's `spawnProcess` with a
//! `ProcessProtocol`): each line of its stdout is printed numbered, each line of its stderr
//! marked, and its exit status reported; this program exits with the child's code.
//!
//! ```text
//! $ cargo run --example child_lines -- sh -c 'echo one; echo oops >&2; echo two; exit 3'
//! [1] one
//! [stderr] oops
//! [2] two
//! child exited: exit code 3 (2 lines)
//! ```
//!
//! With no arguments it runs `ls -l /`. `TORSION_REACTOR` picks the backend.

use std::cell::Cell;
use std::rc::Rc;

use torsion::process::{ExitStatus, ProcessContext, ProcessProtocol, Spawn};
use torsion::Reactor;

/// Splits one pipe's bytes into lines (a simple inline splitter).
#[derive(Default)]
struct Splitter(Vec<u8>);

impl Splitter {
    fn feed(&mut self, data: &[u8], mut line: impl FnMut(&str)) {
        self.0.extend_from_slice(data);
        while let Some(i) = self.0.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = self.0.drain(..=i).collect();
            line(&String::from_utf8_lossy(&l[..i]));
        }
    }

    fn finish(&mut self, line: impl FnOnce(&str)) {
        if !self.0.is_empty() {
            line(&String::from_utf8_lossy(&std::mem::take(&mut self.0)));
        }
    }
}

struct LineCounter {
    out: Splitter,
    err: Splitter,
    lines: u64,
    code: Rc<Cell<i32>>,
}

impl LineCounter {
    fn out_line(lines: &mut u64, l: &str) {
        *lines += 1;
        println!("[{lines}] {l}");
    }
}

impl ProcessProtocol for LineCounter {
    fn connection_made(&mut self, cx: &mut ProcessContext<'_>) {
        // The child gets end of file on its stdin at once.
        cx.process().close_stdin();
    }

    fn out_received(&mut self, _: &mut ProcessContext<'_>, data: &[u8]) {
        let lines = &mut self.lines;
        self.out.feed(data, |l| Self::out_line(lines, l));
    }

    fn err_received(&mut self, _: &mut ProcessContext<'_>, data: &[u8]) {
        self.err.feed(data, |l| println!("[stderr] {l}"));
    }

    fn child_connection_lost(&mut self, _: &mut ProcessContext<'_>, fd: i32) {
        match fd {
            1 => {
                let lines = &mut self.lines;
                self.out.finish(|l| Self::out_line(lines, l));
            }
            2 => self.err.finish(|l| println!("[stderr] {l}")),
            _ => {}
        }
    }

    fn process_ended(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
        println!("child exited: {status} ({} lines)", self.lines);
        self.code.set(match status {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal.number(),
        });
        cx.reactor().stop().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (program, rest) = match args.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => ("ls".to_string(), vec!["-l".to_string(), "/".to_string()]),
    };
    let reactor = Reactor::new().unwrap_or_else(|e| {
        eprintln!("child_lines: {e}");
        std::process::exit(2);
    });
    let code = Rc::new(Cell::new(0));
    let protocol = LineCounter {
        out: Splitter::default(),
        err: Splitter::default(),
        lines: 0,
        code: code.clone(),
    };
    if let Err(e) = reactor.spawn_process(protocol, &Spawn::new(&program).args(&rest)) {
        eprintln!("child_lines: {e}");
        std::process::exit(127);
    }
    if let Err(e) = reactor.run() {
        eprintln!("child_lines: {e}");
        std::process::exit(2);
    }
    std::process::exit(code.get());
}
