//! The process example, run as a user would.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use torsion::testing::output_within;

fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "torsion", "--example", name]);
    if p.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building example {name}");
    p.join("examples").join(name)
}

#[test]
fn child_lines_numbers_a_childs_lines_and_passes_its_exit_code() {
    let bin = example("child_lines");
    for backend in ["select", "poll", "epoll"] {
        let out = output_within(
            Command::new(&bin)
                .args([
                    "sh",
                    "-c",
                    "echo one; echo oops >&2; sleep 0.1; echo two; printf three; exit 3",
                ])
                .env("TORSION_REACTOR", backend),
            Duration::from_secs(120),
        )
        .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(out.status.code(), Some(3), "{backend}: {text}");
        assert!(lines.contains(&"[stderr] oops"), "{backend}: {text}");
        let numbered: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("[") && !l.starts_with("[stderr]"))
            .collect();
        assert_eq!(
            numbered,
            [&"[1] one", &"[2] two", &"[3] three"],
            "{backend}"
        );
        assert_eq!(
            lines.last(),
            Some(&"child exited: exit code 3 (3 lines)"),
            "{backend}"
        );
    }
}

#[test]
fn child_lines_reports_a_missing_program() {
    let out = output_within(
        Command::new(example("child_lines")).arg("torsion-no-such-program"),
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such program"));
}
