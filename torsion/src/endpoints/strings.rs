//! Endpoint strings (Twisted's `serverFromString` / `clientFromString`): the grammar, typed
//! descriptions of the built-in schemes, and the registry of schemes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use super::{
    ClientEndpoint, EndpointReactor, ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint,
    UnixClientEndpoint, UnixServerEndpoint, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT,
};
use crate::interfaces::UnixAddress;

/// Why an endpoint string was refused. Each variant names the part of the string at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The string is empty.
    Empty,
    /// The string ends with a lone backslash.
    TrailingBackslash,
    /// No parser for this scheme (for this side: server or client).
    UnknownScheme {
        /// The scheme given.
        scheme: String,
        /// `"server"` or `"client"`.
        side: &'static str,
    },
    /// A required argument is missing.
    Missing {
        /// The scheme.
        scheme: String,
        /// The argument's name.
        name: &'static str,
    },
    /// An option the scheme does not know.
    UnknownOption {
        /// The scheme.
        scheme: String,
        /// The option given.
        name: String,
    },
    /// More positional arguments than the scheme takes.
    ExtraArgument {
        /// The scheme.
        scheme: String,
        /// The first argument too many.
        value: String,
    },
    /// The same argument given twice (by position and by name, or twice by name).
    Duplicate {
        /// The argument's name.
        name: String,
    },
    /// An argument that must be a number is not one.
    BadNumber {
        /// The argument's name.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// A number outside its range.
    OutOfRange {
        /// The argument's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// The range allowed, for people.
        range: &'static str,
    },
    /// An argument that must be an IP address (or socket address) is not one.
    BadAddress {
        /// The argument's name.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// A file named by an option cannot be used (missing, unreadable, or not what the option
    /// needs: a PEM file without a certificate, say).
    BadFile {
        /// The option's name.
        name: String,
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A value that is not valid for its option (a server name that is not a DNS name, an
    /// empty ALPN protocol, options that do not go together...).
    BadValue {
        /// The option's name.
        name: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The string is valid, but this build cannot make that kind of endpoint yet.
    Unsupported {
        /// The scheme.
        scheme: String,
        /// Why.
        detail: String,
    },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Empty => f.write_str("empty endpoint description"),
            EndpointError::TrailingBackslash => {
                f.write_str("endpoint description ends with a lone backslash")
            }
            EndpointError::UnknownScheme { scheme, side } => {
                write!(f, "unknown {side} endpoint type {scheme:?}")
            }
            EndpointError::Missing { scheme, name } => {
                write!(f, "{scheme}: missing argument {name:?}")
            }
            EndpointError::UnknownOption { scheme, name } => {
                write!(f, "{scheme}: unknown option {name:?}")
            }
            EndpointError::ExtraArgument { scheme, value } => {
                write!(f, "{scheme}: unexpected argument {value:?}")
            }
            EndpointError::Duplicate { name } => write!(f, "argument {name:?} given twice"),
            EndpointError::BadNumber { name, value } => {
                write!(f, "{name}: {value:?} is not a number")
            }
            EndpointError::OutOfRange { name, value, range } => {
                write!(f, "{name}: {value} is out of range ({range})")
            }
            EndpointError::BadAddress { name, value } => {
                write!(f, "{name}: {value:?} is not an IP address")
            }
            EndpointError::BadFile { name, path, detail } => {
                write!(f, "{name}: {}: {detail}", path.display())
            }
            EndpointError::BadValue {
                name,
                value,
                detail,
            } => write!(f, "{name}: {value:?}: {detail}"),
            EndpointError::Unsupported { scheme, detail } => write!(f, "{scheme}: {detail}"),
        }
    }
}

impl std::error::Error for EndpointError {}

/// Endpoint strings longer than this are refused (they are configuration, not data).
const MAX_DESCRIPTION: usize = 4096;

/// A parsed endpoint string: the scheme, the positional arguments and the `name=value`
/// options, unescaped (Twisted's grammar: `:` separates, `=` names, `\` escapes the next
/// character).
///
/// # Examples
/// ```
/// use torsion::endpoints::EndpointArgs;
///
/// let a = EndpointArgs::parse(r"tcp:8080:interface=\:\:1:backlog=50")?;
/// assert_eq!(a.scheme, "tcp");
/// assert_eq!(a.positional, ["8080"]);
/// assert_eq!(a.options, [("interface".to_string(), "::1".to_string()), ("backlog".to_string(), "50".to_string())]);
/// # Ok::<(), torsion::endpoints::EndpointError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointArgs {
    /// The scheme (`tcp`, `unix`, ...), lower-cased.
    pub scheme: String,
    /// Arguments without a name, in order.
    pub positional: Vec<String>,
    /// `name=value` options, in order.
    pub options: Vec<(String, String)>,
}

impl EndpointArgs {
    /// Splits `description` into its parts.
    ///
    /// # Errors
    /// [`EndpointError::Empty`] for an empty string or scheme,
    /// [`EndpointError::TrailingBackslash`], and [`EndpointError::OutOfRange`] for a string
    /// over 4 KiB.
    pub fn parse(description: &str) -> Result<EndpointArgs, EndpointError> {
        if description.len() > MAX_DESCRIPTION {
            return Err(EndpointError::OutOfRange {
                name: "description",
                value: format!("{} bytes", description.len()),
                range: "at most 4096 bytes",
            });
        }
        // Each part: the text before an unescaped '=' (if any) and after it.
        let mut parts: Vec<(String, Option<String>)> = Vec::new();
        let mut cur = String::new();
        let mut key: Option<String> = None;
        let mut chars = description.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err(EndpointError::TrailingBackslash),
                },
                ':' => {
                    let text = std::mem::take(&mut cur);
                    parts.push(match key.take() {
                        Some(k) => (k, Some(text)),
                        None => (text, None),
                    });
                }
                '=' if key.is_none() => key = Some(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        parts.push(match key.take() {
            Some(k) => (k, Some(cur)),
            None => (cur, None),
        });
        let mut parts = parts.into_iter();
        let scheme = match parts.next() {
            Some((s, None)) if !s.is_empty() => s.to_ascii_lowercase(),
            _ => return Err(EndpointError::Empty),
        };
        let mut args = EndpointArgs {
            scheme,
            positional: Vec::new(),
            options: Vec::new(),
        };
        for (k, v) in parts {
            match v {
                Some(v) => args.options.push((k, v)),
                None => args.positional.push(k),
            }
        }
        Ok(args)
    }

    /// Checks that only `names` are given as options and at most `positional` arguments (the
    /// first names, in order, may also be given by position).
    ///
    /// # Errors
    /// [`EndpointError::UnknownOption`], [`EndpointError::ExtraArgument`],
    /// [`EndpointError::Duplicate`].
    pub fn check(&self, names: &[&str], positional: usize) -> Result<(), EndpointError> {
        if let Some(extra) = self.positional.get(positional) {
            return Err(EndpointError::ExtraArgument {
                scheme: self.scheme.clone(),
                value: extra.clone(),
            });
        }
        for (i, (k, _)) in self.options.iter().enumerate() {
            if !names.contains(&k.as_str()) {
                return Err(EndpointError::UnknownOption {
                    scheme: self.scheme.clone(),
                    name: k.clone(),
                });
            }
            let by_position = names
                .iter()
                .position(|n| n == k)
                .is_some_and(|p| p < positional && p < self.positional.len());
            if by_position || self.options[..i].iter().any(|(o, _)| o == k) {
                return Err(EndpointError::Duplicate { name: k.clone() });
            }
        }
        Ok(())
    }

    /// The value of argument `name`: the option of that name, or else the positional argument
    /// at `position`.
    pub fn get(&self, name: &str, position: Option<usize>) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| position.and_then(|p| self.positional.get(p).map(String::as_str)))
    }

    /// As [`get`](Self::get), failing with [`EndpointError::Missing`] when absent.
    ///
    /// # Errors
    /// [`EndpointError::Missing`].
    pub fn require(
        &self,
        name: &'static str,
        position: Option<usize>,
    ) -> Result<&str, EndpointError> {
        self.get(name, position)
            .ok_or_else(|| EndpointError::Missing {
                scheme: self.scheme.clone(),
                name,
            })
    }
}

/// Reads a whole number between `min` and `max` (digits only) for the option `name`: what
/// every number of an endpoint string goes through (schemes registered by other crates
/// included).
///
/// # Errors
/// [`EndpointError::BadNumber`] for anything but digits, [`EndpointError::OutOfRange`] (with
/// `range`, for people) outside the bounds.
///
/// ```
/// use torsion::endpoints::{number, EndpointError};
///
/// assert_eq!(number::<u16>("port", "443", 1, 65_535, "1 to 65535")?, 443);
/// assert!(matches!(number::<u16>("port", "0x1", 1, 65_535, "1 to 65535"), Err(EndpointError::BadNumber { .. })));
/// assert!(matches!(number::<u16>("port", "70000", 1, 65_535, "1 to 65535"), Err(EndpointError::OutOfRange { .. })));
/// # Ok::<(), EndpointError>(())
/// ```
pub fn number<T: std::str::FromStr + PartialOrd + fmt::Display>(
    name: &'static str,
    value: &str,
    min: T,
    max: T,
    range: &'static str,
) -> Result<T, EndpointError> {
    let v = value.trim();
    let all_digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    if !all_digits {
        return Err(EndpointError::BadNumber {
            name,
            value: value.to_string(),
        });
    }
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(EndpointError::OutOfRange {
            name,
            value: value.to_string(),
            range,
        }),
    }
}

fn flag(name: &'static str, value: &str) -> Result<bool, EndpointError> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(EndpointError::OutOfRange {
            name,
            value: value.to_string(),
            range: "0 or 1",
        }),
    }
}

/// Reads seconds, whole or decimal (`5`, `0.25`), more than 0 and at most a day, for the
/// option `name` (timeouts).
///
/// # Errors
/// [`EndpointError::BadNumber`], or [`EndpointError::OutOfRange`].
///
/// ```
/// use std::time::Duration;
/// use torsion::endpoints::seconds;
///
/// assert_eq!(seconds("timeout", "0.5")?, Duration::from_millis(500));
/// assert!(seconds("timeout", "0").is_err());
/// assert!(seconds("timeout", "-1").is_err());
/// # Ok::<(), torsion::endpoints::EndpointError>(())
/// ```
pub fn seconds(name: &'static str, value: &str) -> Result<Duration, EndpointError> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && v.bytes().filter(|b| *b == b'.').count() <= 1;
    let n: f64 = match v.parse() {
        Ok(n) if ok => n,
        _ => {
            return Err(EndpointError::BadNumber {
                name,
                value: value.to_string(),
            })
        }
    };
    if !(n > 0.0 && n <= 86_400.0) {
        return Err(EndpointError::OutOfRange {
            name,
            value: value.to_string(),
            range: "more than 0 and at most 86400 seconds",
        });
    }
    Ok(Duration::from_secs_f64(n))
}

/// Reads an IP address for the option `name`.
///
/// # Errors
/// [`EndpointError::BadAddress`].
pub fn ip(name: &'static str, value: &str) -> Result<IpAddr, EndpointError> {
    value.parse().map_err(|_| EndpointError::BadAddress {
        name,
        value: value.to_string(),
    })
}

/// A `tcp:` server string: `tcp:PORT[:interface=IP][:backlog=N]` (or `port=PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerDescription {
    /// The port, 0..=65535 (0: any free port).
    pub port: u16,
    /// The interface (default `0.0.0.0`; escape the colons of an IPv6 one: `\:\:1`).
    pub interface: IpAddr,
    /// The accept queue length, 1..=65535 (default 50).
    pub backlog: i32,
}

impl TcpServerDescription {
    /// Reads the arguments of a `tcp:` server string.
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad argument.
    pub fn from_args(a: &EndpointArgs) -> Result<TcpServerDescription, EndpointError> {
        a.check(&["port", "interface", "backlog"], 1)?;
        let port = number("port", a.require("port", Some(0))?, 0, 65_535, "0 to 65535")?;
        let interface = match a.get("interface", None) {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(i) => ip("interface", i)?,
        };
        let backlog = match a.get("backlog", None) {
            None => DEFAULT_BACKLOG,
            Some(b) => number("backlog", b, 1, 65_535, "1 to 65535")?,
        };
        Ok(TcpServerDescription {
            port,
            interface,
            backlog,
        })
    }
}

/// A `tcp:` client string: `tcp:HOST:PORT` or `tcp:host=HOST:port=PORT`, with
/// `timeout=SECONDS` (default 30) and `bindAddress=IP` (or an escaped `IP\:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClientDescription {
    /// The host: a name or an IP address.
    pub host: String,
    /// The port, 1..=65535.
    pub port: u16,
    /// The connect timeout (more than 0, at most a day).
    pub timeout: Duration,
    /// The local address to bind first.
    pub bind: Option<SocketAddr>,
}

impl TcpClientDescription {
    /// Reads the arguments of a `tcp:` client string.
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad argument.
    pub fn from_args(a: &EndpointArgs) -> Result<TcpClientDescription, EndpointError> {
        a.check(&["host", "port", "timeout", "bindAddress"], 2)?;
        let host = a.require("host", Some(0))?;
        if host.is_empty() {
            return Err(EndpointError::Missing {
                scheme: a.scheme.clone(),
                name: "host",
            });
        }
        let port = number("port", a.require("port", Some(1))?, 1, 65_535, "1 to 65535")?;
        let timeout = match a.get("timeout", None) {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(t) => seconds("timeout", t)?,
        };
        let bind = match a.get("bindAddress", None) {
            None => None,
            Some(b) => Some(match b.parse::<SocketAddr>() {
                Ok(sa) => sa,
                Err(_) => SocketAddr::new(ip("bindAddress", b)?, 0),
            }),
        };
        Ok(TcpClientDescription {
            host: host.to_string(),
            port,
            timeout,
            bind,
        })
    }
}

/// A `unix:` server string: `unix:PATH` or `unix:address=PATH`, with `mode=OCTAL` (default
/// 666), `backlog=N` (default 50) and `lockfile=0|1` (default 1, as Twisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixServerDescription {
    /// The socket's path.
    pub path: PathBuf,
    /// The socket file's permissions, at most 0o777.
    pub mode: u32,
    /// The accept queue length, 1..=65535.
    pub backlog: i32,
    /// Guard the path with a lock file (`PATH.lock`) so that two servers do not share it.
    pub lockfile: bool,
}

impl UnixServerDescription {
    /// The socket's address: the path, or a Linux abstract name when the path starts with
    /// `@` (`unix:@name`).
    pub fn address(&self) -> UnixAddress {
        unix_address(&self.path)
    }

    /// Reads the arguments of a `unix:` server string (`path=` is taken for `address=`).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad argument.
    pub fn from_args(a: &EndpointArgs) -> Result<UnixServerDescription, EndpointError> {
        a.check(&["address", "path", "mode", "backlog", "lockfile"], 1)?;
        let path = unix_path(a)?;
        let mode = match a.get("mode", None) {
            None => 0o666,
            Some(m) if !m.is_empty() && m.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                match u32::from_str_radix(m, 8) {
                    Ok(n) if n <= 0o777 => n,
                    _ => {
                        return Err(EndpointError::OutOfRange {
                            name: "mode",
                            value: m.to_string(),
                            range: "octal 0 to 777",
                        })
                    }
                }
            }
            Some(m) => {
                return Err(EndpointError::BadNumber {
                    name: "mode",
                    value: m.to_string(),
                })
            }
        };
        let backlog = match a.get("backlog", None) {
            None => DEFAULT_BACKLOG,
            Some(b) => number("backlog", b, 1, 65_535, "1 to 65535")?,
        };
        let lockfile = match a.get("lockfile", None) {
            None => true,
            Some(l) => flag("lockfile", l)?,
        };
        Ok(UnixServerDescription {
            path,
            mode,
            backlog,
            lockfile,
        })
    }
}

/// A `unix:` client string: `unix:PATH` or `unix:path=PATH` (or `address=PATH`), with
/// `timeout=SECONDS` (default 30) and `checkPID=0|1` (default 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixClientDescription {
    /// The socket's path.
    pub path: PathBuf,
    /// The connect timeout.
    pub timeout: Duration,
    /// Refuse to connect when the server's lock file names a dead process.
    pub check_pid: bool,
}

impl UnixClientDescription {
    /// The socket's address: the path, or a Linux abstract name when the path starts with
    /// `@` (`unix:@name`).
    pub fn address(&self) -> UnixAddress {
        unix_address(&self.path)
    }

    /// Reads the arguments of a `unix:` client string.
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad argument.
    pub fn from_args(a: &EndpointArgs) -> Result<UnixClientDescription, EndpointError> {
        a.check(&["path", "address", "timeout", "checkPID"], 1)?;
        let path = unix_path(a)?;
        let timeout = match a.get("timeout", None) {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(t) => seconds("timeout", t)?,
        };
        let check_pid = match a.get("checkPID", None) {
            None => false,
            Some(c) => flag("checkPID", c)?,
        };
        Ok(UnixClientDescription {
            path,
            timeout,
            check_pid,
        })
    }
}

fn unix_address(path: &std::path::Path) -> UnixAddress {
    match path.to_str() {
        Some(s) => UnixAddress::from(s),
        None => UnixAddress::Path(path.to_path_buf()),
    }
}

/// The path of a `unix:` string: positional, `path=` or `address=` (one of them).
fn unix_path(a: &EndpointArgs) -> Result<PathBuf, EndpointError> {
    let named = a
        .options
        .iter()
        .filter(|(k, _)| k == "path" || k == "address")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>();
    if named.len() + a.positional.len().min(1) > 1 {
        return Err(EndpointError::Duplicate {
            name: "path".into(),
        });
    }
    let path = named
        .first()
        .copied()
        .or(a.positional.first().map(String::as_str))
        .unwrap_or("");
    if path.is_empty() {
        return Err(EndpointError::Missing {
            scheme: a.scheme.clone(),
            name: "path",
        });
    }
    if path.contains('\0') {
        return Err(EndpointError::BadAddress {
            name: "path",
            value: path.replace('\0', "\\0"),
        });
    }
    Ok(PathBuf::from(path))
}

/// Escapes `value` for an endpoint string: a `\` before each `:`, `=` and `\` (Twisted's
/// `quoteStringArgument`), so that any text (an IPv6 address, a path) is read back as one
/// argument.
///
/// ```
/// use torsion::endpoints::{quote, EndpointArgs};
///
/// let s = format!("tcp:0:interface={}", quote("::1"));
/// assert_eq!(s, r"tcp:0:interface=\:\:1");
/// assert_eq!(EndpointArgs::parse(&s)?.options[0].1, "::1");
/// # Ok::<(), torsion::endpoints::EndpointError>(())
/// ```
#[doc(alias = "quoteStringArgument")]
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ':' | '=' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Makes a server endpoint from the parsed arguments of its scheme.
pub type ServerParser = Rc<
    dyn Fn(&dyn EndpointReactor, &EndpointArgs) -> Result<Box<dyn ServerEndpoint>, EndpointError>,
>;

/// Makes a client endpoint from the parsed arguments of its scheme.
pub type ClientParser = Rc<
    dyn Fn(&dyn EndpointReactor, &EndpointArgs) -> Result<Box<dyn ClientEndpoint>, EndpointError>,
>;

/// The endpoint schemes known to [`server`](Self::server) and [`client`](Self::client):
/// `tcp` and `unix` built in, more with [`register_server`](Self::register_server) and
/// [`register_client`](Self::register_client). Cheap to clone. [`server_from_string`] and
/// [`client_from_string`] use this thread's default registry, which
/// [`register_server_scheme`] and [`register_client_scheme`] extend (how the TLS crate adds
/// `ssl:`).
///
/// `unix:` strings make [`UnixServerEndpoint`]s and [`UnixClientEndpoint`]s (a path, or
/// `@name` for a Linux abstract name); the `torsion-tls` crate adds `ssl:` and `tls:`
/// (`torsion_tls::register_endpoints`).
///
/// # Examples
/// A scheme of one's own, `echo:PORT`, an alias of `tcp:PORT:interface=127.0.0.1`:
/// ```
/// use std::rc::Rc;
/// use torsion::endpoints::{EndpointRegistry, TcpServerEndpoint};
/// use torsion::Reactor;
///
/// let mut registry = EndpointRegistry::new();
/// registry.register_server("echo", Rc::new(|reactor, args| {
///     args.check(&["port"], 1)?;
///     let port = args.require("port", Some(0))?.parse().map_err(|_| {
///         torsion::endpoints::EndpointError::BadNumber { name: "port", value: args.positional[0].clone() }
///     })?;
///     Ok(Box::new(TcpServerEndpoint::new(reactor, port).interface("127.0.0.1".parse().unwrap())))
/// }));
/// let reactor = Reactor::new()?;
/// let e = registry.server(&reactor, "echo:7")?;
/// assert_eq!(e.describe(), "tcp:127.0.0.1:7 (backlog 50)");
/// assert!(registry.server(&reactor, "ssl:443").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EndpointRegistry {
    servers: HashMap<String, ServerParser>,
    clients: HashMap<String, ClientParser>,
}

impl fmt::Debug for EndpointRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s: Vec<&String> = self.servers.keys().collect();
        let mut c: Vec<&String> = self.clients.keys().collect();
        s.sort();
        c.sort();
        f.debug_struct("EndpointRegistry")
            .field("servers", &s)
            .field("clients", &c)
            .finish()
    }
}

impl Default for EndpointRegistry {
    fn default() -> Self {
        EndpointRegistry::new()
    }
}

impl EndpointRegistry {
    /// The built-in schemes: `tcp` and `unix`.
    pub fn new() -> EndpointRegistry {
        let mut r = EndpointRegistry::empty();
        r.register_server(
            "tcp",
            Rc::new(|reactor, a| {
                let d = TcpServerDescription::from_args(a)?;
                Ok(Box::new(TcpServerEndpoint::from_description(reactor, &d)))
            }),
        );
        r.register_client(
            "tcp",
            Rc::new(|reactor, a| {
                let d = TcpClientDescription::from_args(a)?;
                Ok(Box::new(TcpClientEndpoint::from_description(reactor, &d)))
            }),
        );
        r.register_server(
            "unix",
            Rc::new(|reactor, a| {
                let d = UnixServerDescription::from_args(a)?;
                Ok(Box::new(UnixServerEndpoint::from_description(reactor, &d)))
            }),
        );
        r.register_client(
            "unix",
            Rc::new(|reactor, a| {
                let d = UnixClientDescription::from_args(a)?;
                Ok(Box::new(UnixClientEndpoint::from_description(reactor, &d)))
            }),
        );
        r
    }

    /// A registry with no scheme.
    pub fn empty() -> EndpointRegistry {
        EndpointRegistry {
            servers: HashMap::new(),
            clients: HashMap::new(),
        }
    }

    /// Adds (or replaces) the server scheme `scheme` (matched without regard to case).
    pub fn register_server(&mut self, scheme: &str, parser: ServerParser) {
        self.servers.insert(scheme.to_ascii_lowercase(), parser);
    }

    /// Adds (or replaces) the client scheme `scheme` (matched without regard to case).
    pub fn register_client(&mut self, scheme: &str, parser: ClientParser) {
        self.clients.insert(scheme.to_ascii_lowercase(), parser);
    }

    /// A server endpoint from its string (Twisted's `serverFromString`).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad part.
    pub fn server(
        &self,
        reactor: &dyn EndpointReactor,
        description: &str,
    ) -> Result<Box<dyn ServerEndpoint>, EndpointError> {
        let args = EndpointArgs::parse(description)?;
        let parser =
            self.servers
                .get(&args.scheme)
                .ok_or_else(|| EndpointError::UnknownScheme {
                    scheme: args.scheme.clone(),
                    side: "server",
                })?;
        parser(reactor, &args)
    }

    /// A client endpoint from its string (Twisted's `clientFromString`).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad part.
    pub fn client(
        &self,
        reactor: &dyn EndpointReactor,
        description: &str,
    ) -> Result<Box<dyn ClientEndpoint>, EndpointError> {
        let args = EndpointArgs::parse(description)?;
        let parser =
            self.clients
                .get(&args.scheme)
                .ok_or_else(|| EndpointError::UnknownScheme {
                    scheme: args.scheme.clone(),
                    side: "client",
                })?;
        parser(reactor, &args)
    }
}

/// A server endpoint from its string, with the built-in schemes (Twisted's
/// `serverFromString`): `tcp:PORT[:interface=IP][:backlog=N]`, `unix:PATH[:mode=OCTAL]
/// [:backlog=N][:lockfile=0|1]`. A `\` escapes the next character (`\:` in an IPv6 address).
///
/// # Errors
/// The [`EndpointError`] naming the bad part.
///
/// # Examples
/// ```
/// use torsion::endpoints::{server_from_string, EndpointError};
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// let e = server_from_string(&reactor, "tcp:8080:interface=127.0.0.1:backlog=50")?;
/// assert_eq!(e.describe(), "tcp:127.0.0.1:8080 (backlog 50)");
/// assert_eq!(
///     server_from_string(&reactor, "tcp:80000").unwrap_err().to_string(),
///     "port: 80000 is out of range (0 to 65535)"
/// );
/// assert!(matches!(
///     server_from_string(&reactor, "tpc:80"),
///     Err(EndpointError::UnknownScheme { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "serverFromString")]
pub fn server_from_string(
    reactor: &dyn EndpointReactor,
    description: &str,
) -> Result<Box<dyn ServerEndpoint>, EndpointError> {
    let registry = DEFAULT.with(|d| d.borrow().clone());
    registry.server(reactor, description)
}

/// A client endpoint from its string, with the built-in schemes (Twisted's
/// `clientFromString`): `tcp:HOST:PORT` or `tcp:host=HOST:port=PORT`, with `timeout=SECONDS`
/// and `bindAddress=IP`; `unix:PATH[:timeout=SECONDS][:checkPID=0|1]`.
///
/// # Errors
/// The [`EndpointError`] naming the bad part.
///
/// # Examples
/// ```
/// use torsion::endpoints::client_from_string;
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// let e = client_from_string(&reactor, "tcp:host=example.com:port=80:timeout=5")?;
/// assert_eq!(e.describe(), "tcp:example.com:80");
/// let err = client_from_string(&reactor, "tcp:host=example.com:port=80:timout=5").unwrap_err();
/// assert_eq!(err.to_string(), "tcp: unknown option \"timout\"");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "clientFromString")]
pub fn client_from_string(
    reactor: &dyn EndpointReactor,
    description: &str,
) -> Result<Box<dyn ClientEndpoint>, EndpointError> {
    let registry = DEFAULT.with(|d| d.borrow().clone());
    registry.client(reactor, description)
}

thread_local! {
    /// The registry of [`server_from_string`] and [`client_from_string`] on this thread (a
    /// reactor, and what runs on it, lives on one thread).
    static DEFAULT: RefCell<EndpointRegistry> = RefCell::new(EndpointRegistry::new());
}

/// Adds (or replaces) a server scheme in the registry that [`server_from_string`] uses on
/// this thread (Twisted's endpoint plugins): how a crate such as `torsion-tls` makes `ssl:`
/// strings work everywhere strings are taken.
///
/// ```
/// use std::rc::Rc;
/// use torsion::endpoints::{register_server_scheme, server_from_string, TcpServerEndpoint};
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// assert!(server_from_string(&reactor, "loopback:7").is_err());
/// register_server_scheme("loopback", Rc::new(|reactor, args| {
///     args.check(&["port"], 1)?;
///     let port = args.require("port", Some(0))?.parse().unwrap_or(0);
///     Ok(Box::new(TcpServerEndpoint::new(reactor, port).interface("127.0.0.1".parse().unwrap())))
/// }));
/// assert_eq!(server_from_string(&reactor, "loopback:7")?.describe(), "tcp:127.0.0.1:7 (backlog 50)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_server_scheme(scheme: &str, parser: ServerParser) {
    DEFAULT.with(|d| d.borrow_mut().register_server(scheme, parser));
}

/// Adds (or replaces) a client scheme in the registry that [`client_from_string`] uses on
/// this thread. See [`register_server_scheme`].
pub fn register_client_scheme(scheme: &str, parser: ClientParser) {
    DEFAULT.with(|d| d.borrow_mut().register_client(scheme, parser));
}
