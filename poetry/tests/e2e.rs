//! End to end at scale: 1,000 concurrent downloads from one `poetry serve` process.

mod common;

use common::{poem_path, run, seconds, texts, Server};

#[test]
fn a_thousand_concurrent_downloads() {
    // 3,003 bytes in 100-byte chunks every 0.02 s: 0.62 s a download.
    let s = Server::start(&[
        "--delay",
        "0.02",
        "--num-bytes",
        "100",
        &poem_path("ecstasy.txt").to_string_lossy(),
    ]);
    let port = s.port.to_string();
    let one = run(&["get", &port]);
    let (stdout, _) = texts(&one);
    let single = seconds(
        stdout
            .lines()
            .last()
            .unwrap()
            .strip_prefix("Got 1 poems in ")
            .unwrap(),
    );
    for model in ["reactor", "deferred", "async"] {
        let out = run(&["get", "--model", model, "--repeat", "1000", &port]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{model}: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1001, "{model}");
        for (i, line) in lines[..1000].iter().enumerate() {
            assert_eq!(
                *line,
                format!("Task {}: 3003 bytes of poetry", i + 1),
                "{model}"
            );
        }
        let took = seconds(lines[1000].strip_prefix("Got 1000 poems in ").unwrap());
        // Concurrent: far below 1,000 × 0.62 s; generous for a loaded CI machine.
        assert!(
            took < single * 4.0 + 1.0,
            "{model}: {took} s for 1000, {single} s for one"
        );
    }
}
