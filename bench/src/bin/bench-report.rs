//! `bench-report --runs FILE [--syscalls FILE] [--micro FILE] [--deferred FILE] [--meta FILE]
//! [--notes FILE] [--analysis FILE] --md OUT --svg OUT`:
//! turns the raw lines that `bench/run.sh` collected into `bench/RESULTS.md` (tables of
//! medians, ratios to the raw epoll loop and to tokio current_thread, the issue's targets) and
//! `bench/results.svg` (a bar chart written by hand).
//!
//! Input lines are `key=value` pairs: the load generator's output with `server=`, `label=` and
//! `run=` prepended by the runner; `--syscalls` lines are `server= syscalls= ops= per_msg=`;
//! `--deferred` lines are `impl= stages= run_per_s= total_per_s=`; `--micro` is divan's text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bench::args::Args;

/// The servers in table order, with a colour for the chart.
const SERVERS: &[(&str, &str)] = &[
    ("raw-epoll", "#555555"),
    ("tokio-ct", "#1f77b4"),
    ("tokio-mt", "#6baed6"),
    ("torsion-epoll", "#d62728"),
    ("torsion-poll", "#ff7f0e"),
    ("torsion-select", "#fdae6b"),
    ("torsion-io_uring", "#9467bd"),
    ("tokio-mt-2c", "#9ecae1"),
    ("torsion-epoll-2c", "#e377c2"),
    ("torsion-epoll-x2-2c", "#8c564b"),
    ("torsion-io_uring-x2-2c", "#c5b0d5"),
    ("twisted", "#2ca02c"),
];
const RAW: &str = "raw-epoll";
const TOKIO: &str = "tokio-ct";

type Line = BTreeMap<String, String>;

fn parse_line(l: &str) -> Line {
    l.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read_lines(path: Option<&str>) -> Vec<Line> {
    let Some(path) = path else { return Vec::new() };
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(parse_line)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of each metric over the runs of one server in one scenario.
#[derive(Default, Clone)]
struct Cell {
    runs: usize,
    failed: usize,
    metrics: BTreeMap<String, f64>,
}

impl Cell {
    fn get(&self, k: &str) -> Option<f64> {
        self.metrics.get(k).copied()
    }
}

const METRICS: &[&str] = &[
    "conns",
    "rate",
    "per_server_cpu_s",
    "p50_us",
    "p99_us",
    "server_util",
    "loadgen_util",
    "per_loadgen_cpu_s",
    "mib_s",
    "bytes_per_conn",
    "errors",
];

struct Scenario {
    label: String,
    kind: String,
    cells: BTreeMap<String, Cell>,
}

fn collect(runs: &[Line]) -> Vec<Scenario> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&Line>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for l in runs {
        let (Some(label), Some(server)) = (l.get("label"), l.get("server")) else {
            continue;
        };
        if !order.contains(label) {
            order.push(label.clone());
        }
        kinds.insert(
            label.clone(),
            l.get("scenario").cloned().unwrap_or_default(),
        );
        groups
            .entry((label.clone(), server.clone()))
            .or_default()
            .push(l);
    }
    order
        .into_iter()
        .map(|label| {
            let mut cells = BTreeMap::new();
            for ((lab, server), lines) in &groups {
                if *lab != label {
                    continue;
                }
                let ok: Vec<&&Line> = lines.iter().filter(|l| !l.contains_key("failed")).collect();
                let mut cell = Cell {
                    runs: ok.len(),
                    failed: lines.len() - ok.len(),
                    ..Cell::default()
                };
                for m in METRICS {
                    let vals: Vec<f64> = ok
                        .iter()
                        .filter_map(|l| l.get(*m).and_then(|v| v.parse().ok()))
                        .collect();
                    if let Some(med) = median(vals) {
                        cell.metrics.insert(m.to_string(), med);
                    }
                }
                // Streaming: bytes per server CPU-second as MiB.
                if let Some(v) = cell.get("per_server_cpu_s") {
                    if kinds.get(&label).map(String::as_str) == Some("stream") {
                        cell.metrics.insert("mib_per_cpu_s".into(), v / 1_048_576.0);
                    }
                }
                cells.insert(server.clone(), cell);
            }
            Scenario {
                kind: kinds.get(&label).cloned().unwrap_or_default(),
                label,
                cells,
            }
        })
        .collect()
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 10_000_000.0 => format!("{:.1}M", v / 1e6),
        Some(v) if v >= 100_000.0 => format!("{:.0}k", v / 1000.0),
        Some(v) if v >= 10_000.0 => format!("{:.1}k", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// The figure of merit of a scenario: higher is better except for idle memory.
fn merit(kind: &str, c: &Cell) -> Option<f64> {
    match kind {
        "idle" => c.get("bytes_per_conn"),
        "stream" => c.get("mib_per_cpu_s"),
        _ => c.get("per_server_cpu_s"),
    }
}

fn server_order(s: &Scenario) -> Vec<String> {
    let mut v: Vec<String> = SERVERS
        .iter()
        .map(|(n, _)| n.to_string())
        .filter(|n| s.cells.contains_key(n))
        .collect();
    for k in s.cells.keys() {
        if !v.contains(k) {
            v.push(k.clone());
        }
    }
    v
}

/// A title for a scenario key of `bench/run.sh`.
fn title(s: &Scenario) -> String {
    let conns = s
        .cells
        .values()
        .find_map(|c| c.get("conns"))
        .map(|c| format!("{c:.0}"))
        .unwrap_or_else(|| "?".into());
    match s.label.as_str() {
        "pp100" | "pp1000" => format!("ping-pong, 64 B, {conns} connections"),
        "stream" => "streaming through one connection (256 KiB writes)".into(),
        "churn" => format!("churn: connect, one 64 B echo, close with RST ({conns} in flight)"),
        "idle" => format!("idle: {conns} connections, one echo each"),
        other => other.to_string(),
    }
}

fn table(out: &mut String, s: &Scenario) {
    let raw = s.cells.get(RAW).and_then(|c| merit(&s.kind, c));
    let tokio = s.cells.get(TOKIO).and_then(|c| merit(&s.kind, c));
    let _ = writeln!(out, "### {}\n", title(s));
    match s.kind.as_str() {
        "idle" => {
            let _ = writeln!(
                out,
                "| server | server RSS growth per connection (bytes) | × raw-epoll | × tokio-ct | runs |\n|---|---:|---:|---:|---:|"
            );
            for name in server_order(s) {
                let c = &s.cells[&name];
                let m = merit(&s.kind, c);
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {}{} |",
                    fmt_num(m),
                    ratio(m, raw),
                    ratio(m, tokio),
                    c.runs,
                    failed_note(c)
                );
            }
        }
        kind => {
            let (unit, rate_key) = if kind == "stream" {
                ("MiB/s", "mib_s")
            } else if kind == "churn" {
                ("conn/s", "rate")
            } else {
                ("round trips/s", "rate")
            };
            let per = if kind == "stream" {
                "MiB per server CPU-s"
            } else {
                "per server CPU-s"
            };
            let _ = writeln!(
                out,
                "| server | {unit} | **{per}** | × raw-epoll | × tokio-ct | p50 µs | p99 µs | server CPU | loadgen CPU | runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for name in server_order(s) {
                let c = &s.cells[&name];
                let m = merit(kind, c);
                let pct = |k: &str| {
                    c.get(k)
                        .map(|v| format!("{:.0}%", v * 100.0))
                        .unwrap_or_else(|| "–".into())
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | **{}** | {} | {} | {} | {} | {} | {} | {}{} |",
                    fmt_num(c.get(rate_key)),
                    fmt_num(m),
                    ratio(m, raw),
                    ratio(m, tokio),
                    fmt_num(c.get("p50_us")),
                    fmt_num(c.get("p99_us")),
                    pct("server_util"),
                    pct("loadgen_util"),
                    c.runs,
                    failed_note(c)
                );
            }
        }
    }
    out.push('\n');
}

fn failed_note(c: &Cell) -> String {
    if c.failed > 0 {
        format!(" ({} failed)", c.failed)
    } else {
        String::new()
    }
}

/// The issue's targets, checked where the data exists.
fn targets(out: &mut String, scen: &[Scenario], syscalls: &[Line], deferred: &[Line], micro: &str) {
    let find = |label: &str| scen.iter().find(|s| s.label == label);
    let get = |s: Option<&Scenario>, server: &str, k: &str| -> Option<f64> {
        s.and_then(|s| s.cells.get(server)).and_then(|c| {
            if k == "merit" {
                merit(&s.unwrap().kind, c)
            } else {
                c.get(k)
            }
        })
    };
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let mut check = |name: &str, value: Option<f64>, target: f64, higher: bool, fmt: &str| {
        let shown = value
            .map(|v| fmt.replace("{}", &format!("{v:.2}")))
            .unwrap_or_else(|| "not measured".into());
        let ok = value.map(|v| if higher { v >= target } else { v <= target });
        rows.push((name.to_string(), shown, ok));
    };
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    for (label, conns) in [("pp100", "c100"), ("pp1000", "c1000")] {
        let s = find(label);
        check(
            &format!("ping-pong 64 B {conns}: torsion-epoll ≥ 0.97× raw-epoll (per CPU-s)"),
            div(get(s, "torsion-epoll", "merit"), get(s, RAW, "merit")),
            0.97,
            true,
            "{}×",
        );
        check(
            &format!("ping-pong 64 B {conns}: torsion-epoll p99 ≤ tokio-ct p99"),
            div(get(s, "torsion-epoll", "p99_us"), get(s, TOKIO, "p99_us")),
            1.0,
            false,
            "{}× tokio's",
        );
    }
    let s = find("pp100");
    check(
        "ping-pong 64 B c100: torsion-poll ≥ 0.80× torsion-epoll",
        div(
            get(s, "torsion-poll", "merit"),
            get(s, "torsion-epoll", "merit"),
        ),
        0.80,
        true,
        "{}×",
    );
    let s = find("stream");
    check(
        "streaming: torsion-epoll ≥ 0.95× raw-epoll (per CPU-s)",
        div(get(s, "torsion-epoll", "merit"), get(s, RAW, "merit")),
        0.95,
        true,
        "{}×",
    );
    let s = find("churn");
    check(
        "churn: torsion-epoll ≥ 0.95× raw-epoll (per CPU-s)",
        div(get(s, "torsion-epoll", "merit"), get(s, RAW, "merit")),
        0.95,
        true,
        "{}×",
    );
    let s = find("idle");
    check(
        "idle: torsion-epoll ≤ 512 bytes per connection",
        get(s, "torsion-epoll", "merit"),
        512.0,
        false,
        "{} B",
    );
    let sys = syscalls
        .iter()
        .find(|l| l.get("server").map(String::as_str) == Some("torsion-epoll"))
        .and_then(|l| l.get("per_msg"))
        .and_then(|v| v.parse().ok());
    check(
        "syscalls per echoed message at c100: torsion-epoll ≤ 2.1",
        sys,
        2.1,
        false,
        "{}",
    );
    let rate = |who: &str| {
        deferred
            .iter()
            .find(|l| l.get("impl").map(String::as_str) == Some(who))
            .and_then(|l| l.get("run_per_s"))
            .and_then(|v| v.parse::<f64>().ok())
    };
    check(
        "Deferred callbacks/s (100,000-callback chain) ≥ 50× Twisted's",
        div(rate("torsion"), rate("twisted")),
        50.0,
        true,
        "{}×",
    );
    check(
        "a million timers scheduled and fired: torsion ≤ tokio's wheel (median time)",
        div(
            divan_median(micro, "torsion_schedule_and_fire"),
            divan_median(micro, "tokio_wheel_sleep_and_fire"),
        ),
        1.0,
        false,
        "{}× tokio's time",
    );
    let _ = writeln!(out, "| target | measured | met |\n|---|---|---|");
    for (name, shown, ok) in rows {
        let mark = match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(out, "| {name} | {shown} | {mark} |");
    }
    out.push('\n');
}

/// The median time (seconds) of a divan benchmark, from its text output: the third column of
/// the benchmark's row (`name  fastest │ slowest │ median │ mean │ ...`).
fn divan_median(micro: &str, name: &str) -> Option<f64> {
    let line = micro.lines().find(|l| {
        l.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .split_whitespace()
            .next()
            == Some(name)
    })?;
    let median = line.split('│').nth(2)?.trim();
    let (num, unit) = median.split_once(' ')?;
    let scale = match unit.trim() {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// The Deferred chain section: callbacks per second on torsion and on Twisted.
fn deferred_table(out: &mut String, deferred: &[Line]) {
    out.push_str("## Deferred chain (100,000 callbacks `v + 1`, best of 20 rounds)\n\n");
    out.push_str(
        "| implementation | callbacks/s (firing) | callbacks/s (adding + firing) | × Twisted (firing) |\n\
         |---|---:|---:|---:|\n",
    );
    let get = |l: &Line, k: &str| l.get(k).and_then(|v| v.parse::<f64>().ok());
    let twisted = deferred
        .iter()
        .find(|l| l.get("impl").map(String::as_str) == Some("twisted"))
        .and_then(|l| get(l, "run_per_s"));
    for l in deferred {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            l.get("impl").map_or("?", String::as_str),
            fmt_num(get(l, "run_per_s")),
            fmt_num(get(l, "total_per_s")),
            ratio(get(l, "run_per_s"), twisted),
        );
    }
    out.push('\n');
}

fn svg(scen: &[Scenario]) -> String {
    let charted: Vec<&Scenario> = scen.iter().filter(|s| s.kind != "idle").collect();
    let bar_h = 16.0;
    let gap = 26.0;
    let left = 150.0;
    let width = 760.0;
    let plot_w = 470.0;
    let mut y = 60.0;
    let mut body = String::new();
    for s in &charted {
        let raw = s.cells.get(RAW).and_then(|c| merit(&s.kind, c));
        let vals: Vec<(String, Option<f64>)> = server_order(s)
            .into_iter()
            .map(|n| {
                let m = merit(&s.kind, &s.cells[&n]);
                (n, m)
            })
            .collect();
        let max = vals
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let unit = if s.kind == "stream" {
            "MiB per server CPU-s"
        } else {
            "ops per server CPU-s"
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-weight="bold">{} ({unit})</text>"#,
            y,
            esc(&title(s))
        );
        y += 8.0;
        for (name, v) in &vals {
            let colour = SERVERS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| *c)
                .unwrap_or("#999999");
            let w = v.map(|v| v / max * plot_w).unwrap_or(0.0);
            let label = match (v, raw) {
                (Some(v), Some(r)) if r > 0.0 => {
                    format!("{}  ({:.2}× raw)", fmt_num(Some(*v)), v / r)
                }
                (Some(v), _) => fmt_num(Some(*v)),
                _ => "–".into(),
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect x="{left}" y="{:.0}" width="{w:.1}" height="{bar_h}" fill="{colour}"/><text x="{:.1}" y="{:.0}">{}</text>"#,
                left - 6.0,
                y + 12.0,
                esc(name),
                y,
                left + w + 6.0,
                y + 12.0,
                esc(&label)
            );
            y += bar_h + 4.0;
        }
        y += gap;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="15" font-weight="bold">Echo servers: operations per second of server CPU (median of runs; longer is better)</text>
{body}</svg>
"#,
        y
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn main() {
    let args = Args::from_env();
    let runs = read_lines(args.get_str("runs"));
    let syscalls = read_lines(args.get_str("syscalls"));
    let deferred = read_lines(args.get_str("deferred"));
    let meta = args
        .get_str("meta")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let micro = args
        .get_str("micro")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let analysis = args
        .get_str("analysis")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let notes = args
        .get_str("notes")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let scen = collect(&runs);

    let mut md = String::new();
    md.push_str("# torsion benchmarks\n\n");
    md.push_str(
        "Written by `bench/run.sh` (do not edit by hand). Each echo server runs pinned to core 0, \
         the load generator to core 1; every figure is the median of the runs. The headline is \
         **operations per second of server CPU** (the server's user + system time over the \
         measured window): the load generator can saturate its own core first, so the raw rate \
         alone would measure it. Ratios compare that headline figure. See `bench/README.md` for \
         the method.\n\n![chart](results.svg)\n\n",
    );
    if !meta.is_empty() {
        md.push_str("## Run\n\n```text\n");
        md.push_str(meta.trim_end());
        md.push_str("\n```\n\n");
    }
    md.push_str("## Targets (issue 6)\n\n");
    targets(&mut md, &scen, &syscalls, &deferred, &micro);
    md.push_str("## Echo scenarios\n\n");
    for s in &scen {
        table(&mut md, s);
    }
    md.push_str("## Syscalls per echoed message (ping-pong, 64 B, 100 connections)\n\n");
    if syscalls.is_empty() {
        md.push_str("Not measured in this run.\n\n");
    } else {
        md.push_str("| server | method | syscalls | round trips | per message |\n|---|---|---:|---:|---:|\n");
        for l in &syscalls {
            let g = |k: &str| l.get(k).cloned().unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | **{}** |",
                g("server"),
                g("method"),
                g("syscalls"),
                g("ops"),
                g("per_msg")
            );
        }
        md.push('\n');
    }
    if !deferred.is_empty() {
        deferred_table(&mut md, &deferred);
    }
    if !micro.is_empty() {
        md.push_str("## Microbenchmarks (divan)\n\n```text\n");
        md.push_str(micro.trim_end());
        md.push_str("\n```\n\n");
    }
    if !analysis.is_empty() {
        md.push_str("## Analysis\n\n");
        md.push_str(analysis.trim_end());
        md.push_str("\n\n");
    }
    if !notes.is_empty() {
        md.push_str("## Notes\n\n");
        md.push_str(notes.trim_end());
        md.push('\n');
    }
    let md_path = args.get_str("md").unwrap_or("bench/RESULTS.md");
    let svg_path = args.get_str("svg").unwrap_or("bench/results.svg");
    std::fs::write(md_path, md).expect("write markdown");
    std::fs::write(svg_path, svg(&scen)).expect("write svg");
    eprintln!("wrote {md_path} and {svg_path}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_tables() {
        let runs: Vec<Line> = [
            "server=raw-epoll label=pp scenario=pingpong rate=100 per_server_cpu_s=200 p99_us=5",
            "server=raw-epoll label=pp scenario=pingpong rate=300 per_server_cpu_s=100 p99_us=7",
            "server=raw-epoll label=pp scenario=pingpong rate=200 per_server_cpu_s=300 p99_us=6",
            "server=tokio-ct label=pp scenario=pingpong rate=50 per_server_cpu_s=100",
            "server=tokio-ct label=pp scenario=pingpong failed=1",
        ]
        .iter()
        .map(|l| parse_line(l))
        .collect();
        let scen = collect(&runs);
        assert_eq!(scen.len(), 1);
        let raw = &scen[0].cells["raw-epoll"];
        assert_eq!(raw.get("rate"), Some(200.0));
        assert_eq!(raw.get("per_server_cpu_s"), Some(200.0));
        assert_eq!(scen[0].cells["tokio-ct"].failed, 1);
        let mut md = String::new();
        table(&mut md, &scen[0]);
        assert!(
            md.contains("| tokio-ct | 50.00 | **100** | 0.50× | 1.00× |"),
            "{md}"
        );
        assert!(svg(&scen).starts_with("<svg"));
    }

    #[test]
    fn divan_medians() {
        let micro = "timers                  fastest  │ slowest  │ median   │ mean\n\
                     ├─ tokio_wheel_sleep_and_fire   155.1 ms │ 158 ms │ 155.1 ms │ 156.1 ms │ 3\n\
                     │                               6.4 Mitem/s │ 6.3 Mitem/s │ 6.4 Mitem/s\n\
                     ╰─ torsion_schedule_and_fire    517.1 µs │ 545.5 µs │ 529.8 µs │ 530 µs │ 3\n";
        assert_eq!(
            divan_median(micro, "tokio_wheel_sleep_and_fire"),
            Some(0.1551)
        );
        let t = divan_median(micro, "torsion_schedule_and_fire").unwrap();
        assert!((t - 529.8e-6).abs() < 1e-12, "{t}");
        assert_eq!(divan_median(micro, "absent"), None);
    }
}
