//! The tutorial's later programs against each other, as processes: the transformation server
//! (`poetry transform`), the transform client (`poetry get --transform`) and the caching proxy
//! (`poetry proxy`).

mod common;

use common::{poem_path, run, texts, Server};

const SCIENCE: &str = include_str!("../poems/science.txt");

/// A slow server of science.txt: 20 chunks of ~33 bytes, 0.05 s apart (about a second).
fn slow_server() -> Server {
    Server::start(&[
        "--delay",
        "0.05",
        "--num-bytes",
        "33",
        &poem_path("science.txt").to_string_lossy(),
    ])
}

#[test]
fn the_transform_client_prints_the_cummingsified_poem() {
    let poems = slow_server();
    let xform = Server::spawn(
        "transform",
        &["--verbose", "--listen", "tcp:0:interface=127.0.0.1"],
    );
    assert_eq!(
        xform.banner,
        format!("Serving transforms on port {}.", xform.port)
    );
    for model in ["deferred", "async"] {
        let out = run(&[
            "get",
            "--model",
            model,
            "--show",
            "--transform",
            &xform.port.to_string(),
            &poems.port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{model}: {stderr}");
        assert!(
            stdout.contains(&SCIENCE.to_lowercase()),
            "{model}: the poem in lower case: {stdout}"
        );
        assert!(!stdout.contains("Sonnet - To Science"), "{model}");
    }
    let log = xform.finish();
    assert_eq!(
        log.matches("Transformed 653 bytes with cummingsify")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn the_transform_client_falls_back_to_the_original_poem() {
    let poems = slow_server();
    // A transform server that refuses the transform: asked for an unknown name it closes
    // without answering. Here: a closed port, and a server whose request limit is too small.
    let tiny = Server::spawn("transform", &["--max-request", "10"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for server in [tiny.port, closed_port] {
        let out = run(&[
            "get",
            "--model",
            "deferred",
            "--show",
            "--transform",
            &server.to_string(),
            &poems.port.to_string(),
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "a failed transform is not a failed poem: {stderr}"
        );
        assert!(
            stdout.contains(SCIENCE.trim_end()),
            "the original poem: {stdout}"
        );
        assert!(
            stderr.contains("Task 1: cummingsify failed (")
                && stderr.contains("keeping the original poem."),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_listen_endpoint_is_refused_naming_the_bad_part() {
    let out = run(&["transform", "--listen", "tcp:99999"]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("99999"), "{stderr}");
    let out = run(&["proxy", "--listen", "carrier-pigeon:1", "10000"]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");
}

#[test]
fn transform_needs_a_deferred_model_and_a_known_transform() {
    let out = run(&["get", "--transform", "1", "2"]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--transform needs --model deferred or --model async"),
        "{stderr}"
    );
    let out = run(&["get", "--xform", "shout", "--transform", "1", "2"]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no transform is named \"shout\""),
        "{stderr}"
    );
}

#[test]
fn the_proxy_fetches_once_for_many_waiting_clients_then_serves_its_cache() {
    let poems = slow_server();
    let proxy = Server::spawn("proxy", &["--verbose", &poems.port.to_string()]);
    assert_eq!(
        proxy.banner,
        format!("Proxying 127.0.0.1:{} on port {}.", poems.port, proxy.port)
    );
    // Five clients at once, while the slow upstream takes about a second: one fetch.
    let out = run(&["get", "--repeat", "5", "--show", &proxy.port.to_string()]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("bytes of poetry").count(), 5, "{stdout}");
    assert_eq!(stdout.matches("Sonnet - To Science").count(), 5, "{stdout}");
    // Later clients: from the cache, even with the upstream gone.
    drop(poems);
    let out = run(&["get", "--repeat", "2", &proxy.port.to_string()]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(texts(&out).0.matches("653 bytes of poetry").count(), 2);
    let log = proxy.finish();
    assert_eq!(
        log.matches("Fetching poem from server.").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("Waiting for the poem being fetched.").count(),
        4,
        "{log}"
    );
    assert_eq!(log.matches("Using cached poem.").count(), 2, "{log}");
}

#[test]
fn the_proxy_resets_its_clients_when_upstream_fails_and_retries_later() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = Server::spawn("proxy", &["--verbose", &upstream.to_string()]);
    let out = run(&["get", &proxy.port.to_string()]);
    let (stdout, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "no upstream: a failed poem, not an empty one: {stdout}"
    );
    assert!(stderr.contains("Poem failed: Task 1"), "{stderr}");
    // The upstream comes up on that port: the next client gets the poem.
    let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", upstream)) else {
        eprintln!("port {upstream} was taken meanwhile: the retry is not checked");
        return;
    };
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"a poem at last\n").unwrap();
    });
    let out = run(&["get", "--show", &proxy.port.to_string()]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("a poem at last"), "{stdout}");
    server.join().unwrap();
    let log = proxy.finish();
    assert_eq!(
        log.matches("Fetching poem from server.").count(),
        2,
        "{log}"
    );
}
