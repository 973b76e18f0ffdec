//! The `poetry` command line: every model's output, the demo, bad arguments, a refused
//! connection, split UTF-8 characters, and the server's options.

mod common;

use std::net::TcpListener;
use std::time::Instant;

use common::{is_timedelta, poem_path, run, seconds, texts, Server};

const ECSTASY: &[u8] = include_bytes!("../poems/ecstasy.txt");
const SCIENCE: &[u8] = include_bytes!("../poems/science.txt");
const ALLA_SERA: &[u8] = include_bytes!("../poems/alla_sera.txt");

/// A port on which nothing listens (bound, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn fast_server(poem: &str) -> Server {
    Server::start(&[
        "--delay",
        "0.01",
        "--num-bytes",
        "200",
        &poem_path(poem).to_string_lossy(),
    ])
}

#[test]
fn serve_announces_file_and_port() {
    let path = poem_path("science.txt");
    let s = Server::start(&["--delay", "0.01", &path.to_string_lossy()]);
    assert_eq!(
        s.banner,
        format!("Serving {} on port {}.", path.display(), s.port)
    );
    assert_ne!(s.port, 0);
}

#[test]
fn blocking_output_follows_the_original() {
    let (a, b) = (fast_server("ecstasy.txt"), fast_server("science.txt"));
    let out = run(&[
        "get",
        "--model",
        "blocking",
        &a.port.to_string(),
        &format!("127.0.0.1:{}", b.port),
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "no progress bars when piped");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(
        lines[0],
        format!("Task 1: get poetry from: 127.0.0.1:{}", a.port)
    );
    let prefix = format!(
        "Task 1: got 3003 bytes of poetry from 127.0.0.1:{} in ",
        a.port
    );
    assert!(
        is_timedelta(lines[1].strip_prefix(&prefix).unwrap()),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        format!("Task 2: get poetry from: 127.0.0.1:{}", b.port)
    );
    let prefix = format!(
        "Task 2: got 653 bytes of poetry from 127.0.0.1:{} in ",
        b.port
    );
    assert!(
        is_timedelta(lines[3].strip_prefix(&prefix).unwrap()),
        "{}",
        lines[3]
    );
    let total = lines[4].strip_prefix("Got 2 poems in ").unwrap();
    assert!(is_timedelta(total), "{total}");
}

#[test]
fn every_async_model_prints_tasks_then_total() {
    let (a, b) = (fast_server("ecstasy.txt"), fast_server("science.txt"));
    for model in ["select", "reactor", "deferred", "async"] {
        let out = run(&[
            "get",
            "--model",
            model,
            &a.port.to_string(),
            &b.port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{model}: {stderr}");
        assert_eq!(stderr, "", "{model}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{model}: {stdout}");
        assert_eq!(lines[0], "Task 1: 3003 bytes of poetry", "{model}");
        assert_eq!(lines[1], "Task 2: 653 bytes of poetry", "{model}");
        let total = lines[2].strip_prefix("Got 2 poems in ").unwrap();
        assert!(is_timedelta(total), "{model}: {total}");
    }
}

#[test]
fn the_default_model_fetches_concurrently() {
    // Three 0.5 s downloads: about 0.5 s at once, 1.5 s one after the other.
    let servers: Vec<Server> = (0..3)
        .map(|_| {
            Server::start(&[
                "--delay",
                "0.05",
                "--num-bytes",
                "66",
                &poem_path("science.txt").to_string_lossy(),
            ])
        })
        .collect();
    let ports: Vec<String> = servers.iter().map(|s| s.port.to_string()).collect();
    let mut args = vec!["get"];
    args.extend(ports.iter().map(String::as_str));
    let out = run(&args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let took = seconds(
        stdout
            .lines()
            .last()
            .unwrap()
            .strip_prefix("Got 3 poems in ")
            .unwrap(),
    );
    assert!((0.45..1.2).contains(&took), "{took} s\n{stdout}");
}

#[test]
fn show_prints_the_poems_byte_for_byte() {
    let s = fast_server("science.txt");
    for model in ["blocking", "select", "reactor", "deferred", "async"] {
        let out = run(&["get", "--show", "--model", model, &s.port.to_string()]);
        assert!(out.status.success(), "{model}");
        let found = out.stdout.windows(SCIENCE.len()).any(|w| w == SCIENCE);
        assert!(found, "{model}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn a_chunk_boundary_inside_a_character_garbles_nothing() {
    // The default 10-byte chunks: check that a boundary falls inside a multi-byte character.
    let text = std::str::from_utf8(ALLA_SERA).unwrap();
    let splits = (10..ALLA_SERA.len())
        .step_by(10)
        .filter(|&i| !text.is_char_boundary(i))
        .count();
    assert!(
        splits > 0,
        "10-byte chunks must split a character for this test to mean anything"
    );
    let s = Server::start(&[
        "--delay",
        "0.001",
        "--num-bytes",
        "10",
        &poem_path("alla_sera.txt").to_string_lossy(),
    ]);
    for model in ["blocking", "select", "reactor", "deferred", "async"] {
        let out = run(&["get", "--show", "--model", model, &s.port.to_string()]);
        let (stdout, stderr) = texts(&out); // panics unless valid UTF-8
        assert!(out.status.success(), "{model}: {stderr}");
        assert!(stdout.contains(text), "{model}: {stdout}");
        assert!(!stdout.contains('\u{FFFD}'), "{model}");
        assert!(
            stdout.contains("Task 1: ") && stdout.contains(" 577 bytes of poetry"),
            "{model}"
        );
    }
    // One byte at a time too: every character is split.
    let s = Server::start(&[
        "--delay",
        "0",
        "--num-bytes",
        "1",
        &poem_path("alla_sera.txt").to_string_lossy(),
    ]);
    let out = run(&["get", "--show", &s.port.to_string()]);
    assert!(texts(&out).0.contains(text));
}

#[test]
fn a_refused_connection_fails_alone() {
    let s = fast_server("science.txt");
    let dead = closed_port();
    for model in ["blocking", "select", "reactor", "deferred", "async"] {
        let out = run(&[
            "get",
            "--model",
            model,
            &dead.to_string(),
            &s.port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{model}: {stdout} {stderr}");
        let failed: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("Poem failed: "))
            .collect();
        assert_eq!(failed.len(), 1, "{model}: {stderr}");
        assert!(
            failed[0].contains(&format!("127.0.0.1:{dead}")),
            "{model}: {stderr}"
        );
        assert!(
            failed[0].to_lowercase().contains("refused"),
            "{model}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{model}: {stderr}");
        assert!(
            stdout.contains("Task 2: ") && stdout.contains("653 bytes of poetry"),
            "{model}: {stdout}"
        );
        assert!(
            stdout
                .lines()
                .last()
                .unwrap()
                .starts_with("Got 1 poems in "),
            "{model}: {stdout}"
        );
    }
}

#[test]
fn ports_must_be_integers() {
    for bad in ["abc", "localhost:http", "10x", "host:"] {
        let out = run(&["get", "10000", bad]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert_eq!(stdout, "");
        assert!(
            stderr.contains("Ports must be integers."),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &["get"],
        &["get", "--model", "threads", "10000"],
        &["get", "--repeat", "0", "10000"],
        &["serve"],
        &["serve", "--num-bytes", "0", "x.txt"],
        &["serve", "--delay", "soon", "x.txt"],
        &["serve", "--port", "70000", "x.txt"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = run(args);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_missing_or_unreadable_poem_is_a_clear_error() {
    let dir = std::env::temp_dir();
    for path in [dir.join("no-such-poem.txt"), dir.clone()] {
        let out = run(&["serve", &path.to_string_lossy()]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.starts_with("poetry: cannot read the poem "),
            "{stderr}"
        );
        assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn fast_sends_everything_at_once() {
    let s = Server::start(&[
        "--fast",
        "--delay",
        "10",
        &poem_path("ecstasy.txt").to_string_lossy(),
    ]);
    let t = Instant::now();
    let out = run(&["get", "--show", &s.port.to_string()]);
    assert!(out.status.success());
    assert!(t.elapsed().as_secs_f64() < 5.0);
    assert!(out.stdout.windows(ECSTASY.len()).any(|w| w == ECSTASY));
}

#[test]
fn one_at_a_time_serves_clients_in_turn() {
    // 653 bytes in 66-byte chunks every 0.05 s: 0.5 s per client, 1.5 s for three in turn.
    let path = poem_path("science.txt");
    let args = ["--delay", "0.05", "--num-bytes", "66"];
    let turn = Server::start(&[&args[..], &["--one-at-a-time", &path.to_string_lossy()]].concat());
    let all = Server::start(&[&args[..], &[&*path.to_string_lossy()]].concat());
    let took = |port: u16| {
        let p = port.to_string();
        let out = run(&["get", "--repeat", "3", &p]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout.matches("653 bytes of poetry").count(), 3, "{stdout}");
        seconds(
            stdout
                .lines()
                .last()
                .unwrap()
                .strip_prefix("Got 3 poems in ")
                .unwrap(),
        )
    };
    let (in_turn, at_once) = (took(turn.port), took(all.port));
    assert!(in_turn >= 1.4, "one at a time took {in_turn} s");
    assert!(at_once < 1.0, "all at once took {at_once} s");
}

#[test]
fn repeat_opens_k_connections_per_address() {
    let (a, b) = (fast_server("science.txt"), fast_server("alla_sera.txt"));
    let out = run(&[
        "get",
        "--model",
        "async",
        "--repeat",
        "3",
        &a.port.to_string(),
        &b.port.to_string(),
    ]);
    let (stdout, _) = texts(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for (i, line) in lines[..6].iter().enumerate() {
        let len = if i < 3 { 653 } else { 577 };
        assert_eq!(*line, format!("Task {}: {len} bytes of poetry", i + 1));
    }
    assert!(lines[6].starts_with("Got 6 poems in "));
}

#[test]
fn demo_runs_with_no_arguments() {
    let out = run(&["demo"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "no progress bars when piped");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "Get Poetry Now! Three slow poetry servers, started in this process:"
    );
    for (line, file) in lines[1..4]
        .iter()
        .zip(["ecstasy.txt", "fascination.txt", "science.txt"])
    {
        assert!(
            line.starts_with(&format!("Serving {file} on port ")),
            "{line}"
        );
    }
    assert!(
        stdout.contains("Task 1: got 3003 bytes of poetry from 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Task 2: got 615 bytes of poetry from 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Task 3: got 653 bytes of poetry from 127.0.0.1:"),
        "{stdout}"
    );
    for line in [
        "Task 1: 3003 bytes of poetry",
        "Task 2: 615 bytes of poetry",
        "Task 3: 653 bytes of poetry",
    ] {
        assert!(lines.contains(&line), "{line}\n{stdout}");
    }
    let got: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("Got 3 poems in "))
        .map(seconds)
        .collect();
    assert_eq!(got.len(), 2, "{stdout}");
    // Three 2 s downloads: about 6 s one after the other, about 2 s at once.
    assert!((5.9..9.0).contains(&got[0]), "blocking {}", got[0]);
    assert!((1.9..3.0).contains(&got[1]), "reactor {}", got[1]);
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("Blocking: 0:00:0") && last.contains("x faster"),
        "{last}"
    );
}

#[test]
fn demo_options_make_it_quicker() {
    let out = run(&["demo", "--delay", "0.01", "--chunks", "5"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("Got 3 poems in ").count(), 2, "{stdout}");
}

#[test]
fn progress_bars_only_on_a_terminal() {
    // `script` (util-linux) runs the client on a pseudo-terminal.
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("`script` not found: terminal half of the test skipped");
        return;
    }
    let s = Server::start(&[
        "--delay",
        "0.02",
        &poem_path("science.txt").to_string_lossy(),
    ]);
    let cmd = format!("{} get {}", env!("CARGO_BIN_EXE_poetry"), s.port);
    let out = torsion::testing::output_within(
        std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", "xterm"),
        common::RUN_LIMIT,
    )
    .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("\u{1b}["), "no bar drawn: {tty:?}");
    assert!(tty.contains("  Task 1 "), "{tty:?}");
    assert!(tty.contains("Task 1: 653 bytes of poetry"), "{tty:?}");
}

#[test]
fn out_of_range_numbers_are_refused_not_panicked_on() {
    let cases: &[&[&str]] = &[
        &["get", "--repeat", "18446744073709551615", "10000"],
        &["get", "--timeout", "1e19", "10000"],
        &["serve", "--delay", "1e19", "x.txt"],
        &["serve", "--delay", "-1", "x.txt"],
        &["demo", "--delay", "1e19"],
    ];
    for args in cases {
        let out = run(args);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_refuses_what_is_not_a_regular_file() {
    // /dev/zero would never end; a FIFO would block the server forever.
    let out = run(&["serve", "/dev/zero"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = common::poetry()
        .args(["serve", &poem_path("science.txt").to_string_lossy()])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn fast_serving_a_large_poem_holds_one_copy_however_many_clients_do_not_read() {
    // A 16 MiB poem to 30 clients that never read: each connection keeps what its socket did
    // not take, and that is the one shared poem, not a copy per client.
    const POEM: usize = 16 << 20;
    const CLIENTS: usize = 30;
    let path = std::env::temp_dir().join(format!("poetry-big-{}.txt", std::process::id()));
    std::fs::write(&path, vec![b'x'; POEM]).unwrap();
    let server = Server::start(&["--fast", &path.to_string_lossy()]);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500)); // every client is served
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    // The poem once (16 MiB) plus the program; a copy per client would be 480 MiB.
    assert!(rss_kib < 64 * 1024, "the server's RSS is {rss_kib} KiB");
    drop(clients);
}

/// A server on a free port that accepts `clients` connections and hands each to `serve`.
fn raw_server(
    clients: usize,
    serve: fn(std::net::TcpStream),
) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..clients {
            let Ok((s, _)) = l.accept() else { return };
            conns.push(std::thread::spawn(move || serve(s)));
        }
        for c in conns {
            let _ = c.join();
        }
    });
    (port, t)
}

const MODELS: [&str; 5] = ["blocking", "select", "reactor", "deferred", "async"];

#[test]
fn a_silent_server_fails_its_download_after_the_idle_timeout() {
    for model in MODELS {
        // Accepts, never sends, keeps the connection open for longer than the test.
        let (port, server) = raw_server(1, |s| {
            std::thread::sleep(std::time::Duration::from_secs(5));
            drop(s);
        });
        let start = Instant::now();
        let out = run(&[
            "get",
            "--model",
            model,
            "--idle-timeout",
            "0.3",
            &port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{model}: {stdout}{stderr}");
        assert!(stderr.contains("Poem failed"), "{model}: {stderr}");
        assert!(stdout.contains("Got 0 poems"), "{model}: {stdout}");
        assert!(
            start.elapsed().as_secs_f64() < 4.0,
            "{model}: waited for the server"
        );
        drop(server);
    }
}

#[test]
fn an_endless_server_fails_its_download_past_the_maximum_size() {
    for model in MODELS {
        let (port, server) = raw_server(1, |mut s| {
            use std::io::Write;
            let chunk = [b'x'; 4096];
            while s.write_all(&chunk).is_ok() {}
        });
        let out = run(&[
            "get",
            "--model",
            model,
            "--max-poem",
            "100000",
            &port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{model}: {stdout}{stderr}");
        assert!(
            stderr.contains("larger than 100000 bytes"),
            "{model}: {stderr}"
        );
        assert!(stdout.contains("Got 0 poems"), "{model}: {stdout}");
        server.join().unwrap();
    }
}
