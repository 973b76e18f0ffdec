//! `[host:]port` arguments, parsed as the tutorial's clients parse them.

use std::fmt;
use std::str::FromStr;

/// The host used when an argument gives only a port.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// A poetry server's address: `host:port`, or just `port` for `127.0.0.1:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Address {
    /// `127.0.0.1:port`.
    pub fn local(port: u16) -> Address {
        Address {
            host: DEFAULT_HOST.to_string(),
            port,
        }
    }
}

/// Why an address argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAddress(pub String);

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadAddress {}

impl FromStr for Address {
    type Err = BadAddress;

    /// `10001`, `localhost:10001`, `:10001` (host defaults to 127.0.0.1). A port that is not
    /// all digits is `Ports must be integers.`, as in the original.
    fn from_str(arg: &str) -> Result<Address, BadAddress> {
        let (host, port) = match arg.rsplit_once(':') {
            Some((h, p)) => (if h.is_empty() { DEFAULT_HOST } else { h }, p),
            None => (DEFAULT_HOST, arg),
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadAddress("Ports must be integers.".into()));
        }
        // `[::1]:10000`: the brackets are URL syntax, not part of the address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port
            .parse()
            .map_err(|_| BadAddress(format!("Port {port} is out of range (0 to 65535).")))?;
        Ok(Address {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_original() {
        assert_eq!("10001".parse(), Ok(Address::local(10001)));
        assert_eq!(":7".parse(), Ok(Address::local(7)));
        let a: Address = "localhost:10002".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 10002));
        assert_eq!(a.to_string(), "localhost:10002");
        let v6: Address = "[::1]:10003".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 10003));
        assert_eq!(v6.to_string(), "[::1]:10003");
        for bad in ["", "x", "localhost", "host:", "10a", "-1", "1.5"] {
            assert_eq!(
                bad.parse::<Address>(),
                Err(BadAddress("Ports must be integers.".into())),
                "{bad:?}"
            );
        }
        assert!("70000"
            .parse::<Address>()
            .unwrap_err()
            .0
            .contains("out of range"));
    }
}
