//! A minimal `--flag value` parser, so that the binaries need no argument-parsing dependency.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed command line: positional words and `--name value` / `--name=value` pairs.
#[derive(Debug, Default)]
pub struct Args {
    /// Words that are not flags, in order.
    pub positional: Vec<String>,
    flags: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args()` (without the program name). A flag followed by another flag
    /// or by nothing is taken as the boolean `true`.
    pub fn from_env() -> Args {
        Args::parse(std::env::args().skip(1))
    }

    /// Parses the given words.
    pub fn parse(words: impl IntoIterator<Item = String>) -> Args {
        let mut out = Args::default();
        let mut it = words.into_iter().peekable();
        while let Some(w) = it.next() {
            if let Some(name) = w.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    out.flags.insert(k.to_string(), v.to_string());
                } else {
                    let value = match it.peek() {
                        Some(next) if !next.starts_with("--") => it.next().unwrap(),
                        _ => "true".to_string(),
                    };
                    out.flags.insert(name.to_string(), value);
                }
            } else {
                out.positional.push(w);
            }
        }
        out
    }

    /// The raw value of `--name`.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// `--name` parsed, or `default` when absent. Exits with a message when it does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        self.get_opt(name).unwrap_or(default)
    }

    /// `--name` parsed, if present. Exits with a message when it does not parse.
    pub fn get_opt<T: FromStr>(&self, name: &str) -> Option<T> {
        self.flags.get(name).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("bad value for --{name}: {v:?}");
                std::process::exit(2)
            })
        })
    }

    /// `--name` parsed; exits with a message when it is absent or does not parse.
    pub fn require<T: FromStr>(&self, name: &str) -> T {
        if !self.flags.contains_key(name) {
            eprintln!("missing --{name}");
            std::process::exit(2)
        }
        self.get_opt(name).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_positionals() {
        let a = Args::parse(
            ["pingpong", "--port", "7", "--quick", "--size=64"]
                .iter()
                .map(|s| s.to_string()),
        );
        assert_eq!(a.positional, ["pingpong"]);
        assert_eq!(a.get("port", 0u16), 7);
        assert_eq!(a.get("size", 0usize), 64);
        assert!(a.get("quick", false));
        assert_eq!(a.get("missing", 3u8), 3);
    }
}
