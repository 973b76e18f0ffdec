//! Helpers for the command-line tests: run `poetry`, start `poetry serve` in the background.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long any one `poetry` run may take before the test fails (a hang must fail, not stall
/// the suite).
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The `poetry` binary built for these tests.
pub fn poetry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_poetry"))
}

/// A poem file of the package.
pub fn poem_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("poems")
        .join(name)
}

/// A `poetry serve` (or `transform`, `proxy`) process, killed when dropped.
pub struct Server {
    child: Child,
    /// The rest of its standard output.
    stdout: BufReader<std::process::ChildStdout>,
    /// The port it announced.
    pub port: u16,
    /// The line it printed first.
    pub banner: String,
}

impl Server {
    /// Starts `poetry serve ARGS...` and waits for its `Serving ... on port N.` line.
    pub fn start(args: &[&str]) -> Server {
        Server::spawn("serve", args)
    }

    /// Starts `poetry COMMAND ARGS...` and waits for its `... on port N.` line.
    pub fn spawn(command: &str, args: &[&str]) -> Server {
        let mut child = poetry()
            .arg(command)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn poetry {command}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let banner = line.trim_end().to_string();
        let port = banner
            .rsplit_once(" on port ")
            .and_then(|(_, p)| p.strip_suffix('.'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        Server {
            child,
            stdout,
            port,
            banner,
        }
    }

    /// Stops the server and returns what it printed after its banner.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        rest
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `poetry ARGS...` to completion; kills it and panics after [`RUN_LIMIT`].
pub fn run(args: &[&str]) -> Output {
    torsion::testing::output_within(poetry().args(args), RUN_LIMIT).expect("run poetry")
}

/// stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8(out.stdout.clone()).expect("utf-8 stdout"),
        String::from_utf8(out.stderr.clone()).expect("utf-8 stderr"),
    )
}

/// Checks a `H:MM:SS[.ffffff]` time (Python's timedelta format).
pub fn is_timedelta(s: &str) -> bool {
    let (hms, frac) = s.split_once('.').unwrap_or((s, "000000"));
    let parts: Vec<&str> = hms.split(':').collect();
    parts.len() == 3
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && frac.len() == 6
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Seconds of a `H:MM:SS.ffffff` time.
pub fn seconds(s: &str) -> f64 {
    let p: Vec<f64> = s.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600.0 + p[1] * 60.0 + p[2]
}
