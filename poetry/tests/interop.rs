//! Wire compatibility with the tutorial's programs (Python 3 ports of its blocking server and
//! select() client, in `tests/python/`): our client against its server, its client against
//! ours. Skipped, with a note, when `python3` is not installed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{poem_path, run, texts, Server};

const ECSTASY: &[u8] = include_bytes!("../poems/ecstasy.txt");
const ALLA_SERA: &[u8] = include_bytes!("../poems/alla_sera.txt");

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("python3 not found: interoperability test skipped");
    }
    ok
}

struct PyServer(Child, u16);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_server(poem: &str) -> PyServer {
    let mut child = Command::new("python3")
        .args([
            &script("slowpoetry.py"),
            "--port",
            "0",
            "--delay",
            "0.001",
            "--num-bytes",
            "10",
        ])
        .arg(poem_path(poem))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim_end()
        .trim_end_matches('.')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    PyServer(child, port)
}

#[test]
fn our_clients_against_the_tutorials_server() {
    if !have_python() {
        return;
    }
    let py = python_server("alla_sera.txt");
    for model in ["blocking", "select", "reactor", "deferred", "async"] {
        let out = run(&["get", "--show", "--model", model, &py.1.to_string()]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{model}: {stderr}");
        assert!(stdout.contains("577 bytes of poetry"), "{model}: {stdout}");
        assert!(
            stdout.contains(std::str::from_utf8(ALLA_SERA).unwrap()),
            "{model}"
        );
    }
}

#[test]
fn the_tutorials_client_against_our_server() {
    if !have_python() {
        return;
    }
    let ours = Server::start(&[
        "--delay",
        "0.001",
        "--num-bytes",
        "100",
        &poem_path("ecstasy.txt").to_string_lossy(),
    ]);
    let out = torsion::testing::output_within(
        Command::new("python3").args([
            &script("get_poetry.py"),
            &ours.port.to_string(),
            &format!("127.0.0.1:{}", ours.port),
        ]),
        common::RUN_LIMIT,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        stdout.starts_with("Task 1: 3003 bytes of poetry\nTask 2: 3003 bytes of poetry\n"),
        "{stdout}"
    );
    assert_eq!(
        out.stdout
            .windows(ECSTASY.len())
            .filter(|w| *w == ECSTASY)
            .count(),
        2
    );
    assert!(stdout
        .lines()
        .last()
        .unwrap()
        .starts_with("Got 2 poems in "));
}
