//! The poetry transformation server and its client (the tutorial's parts 12 and 13:
//! `twisted-server-1/transformedpoetry.py` and `twisted-client-7/get-poetry.py`).
//!
//! # The protocol
//! A client connects and sends one [netstring](torsion::protocols::basic): the transform's
//! name, a dot, and the poem (`cummingsify.the poem...`). The server answers with one netstring,
//! the transformed poem, and closes the connection. A request without a dot, or naming a
//! transform the server does not know, or one that fails, gets no answer: the server just closes
//! the connection, and the client treats that as a failed transform.
//!
//! # Transforms
//! * `cummingsify`: the poem in lower case, as e. e. cummings wrote (the tutorial's one
//!   transform). Text that is not UTF-8 is lowered byte by byte (ASCII letters only).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use torsion::defer::{Failure, Resolver};
use torsion::endpoints::{connect_protocol, TcpClientEndpoint};
use torsion::protocols::basic::{StringContext, StringHandler, StringReceiver};
use torsion::{Deferred, Factory, ProtocolFactory, Reactor, Reason};

use crate::Address;

/// A transformation the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// The poem in lower case.
    Cummingsify,
}

impl Transform {
    /// Every transform, in the order the server lists them.
    pub const ALL: &'static [Transform] = &[Transform::Cummingsify];

    /// The transform's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Transform::Cummingsify => "cummingsify",
        }
    }

    /// Applies the transform to `poem`.
    pub fn apply(self, poem: &[u8]) -> Vec<u8> {
        match self {
            Transform::Cummingsify => match std::str::from_utf8(poem) {
                Ok(text) => text.to_lowercase().into_bytes(),
                Err(_) => poem.to_ascii_lowercase(),
            },
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transform name the server does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTransform(pub String);

impl fmt::Display for UnknownTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no transform is named {:?} (known: ", self.0)?;
        for (i, t) in Transform::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownTransform {}

impl FromStr for Transform {
    type Err = UnknownTransform;

    fn from_str(s: &str) -> Result<Transform, UnknownTransform> {
        Transform::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTransform(s.to_string()))
    }
}

/// Why the server answers a request with nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// The request has no `.` between the transform's name and the poem.
    NoDot,
    /// The name is not a transform (or not UTF-8).
    Unknown(UnknownTransform),
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::NoDot => f.write_str("the request has no '.' after the transform's name"),
            BadRequest::Unknown(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for BadRequest {}

/// The request for `transform` of `poem`: `name.poem`.
pub fn request(transform: Transform, poem: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(transform.name().len() + 1 + poem.len());
    r.extend_from_slice(transform.name().as_bytes());
    r.push(b'.');
    r.extend_from_slice(poem);
    r
}

/// Answers one request: the transformed poem, or why there is no answer.
pub fn answer(request: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let dot = request
        .iter()
        .position(|&b| b == b'.')
        .ok_or(BadRequest::NoDot)?;
    let (name, poem) = (&request[..dot], &request[dot + 1..]);
    let name = std::str::from_utf8(name)
        .map_err(|_| BadRequest::Unknown(UnknownTransform(String::from_utf8_lossy(name).into())))?;
    let transform: Transform = name.parse().map_err(BadRequest::Unknown)?;
    Ok(transform.apply(poem))
}

/// The longest request the server takes by default: a poem of 16 MiB and its transform's name.
pub const DEFAULT_MAX_REQUEST: usize = (16 << 20) + 64;

/// The server's protocol (the tutorial's `TransformProtocol`): one request, one answer, close.
struct TransformProtocol {
    verbose: bool,
}

impl StringHandler for TransformProtocol {
    fn string_received(&mut self, cx: &mut StringContext<'_, '_>, request: &[u8]) {
        let peer = cx.transport().peer();
        match answer(request) {
            Ok(poem) => {
                if self.verbose {
                    use std::io::Write;
                    let name = &request[..request.iter().position(|&b| b == b'.').unwrap_or(0)];
                    let _ = writeln!(
                        std::io::stdout(),
                        "Transformed {} bytes with {} for {peer}.",
                        poem.len(),
                        String::from_utf8_lossy(name)
                    );
                }
                // A netstring has no length limit: this cannot fail.
                let _ = cx.send_string(&poem);
            }
            Err(why) => tracing::info!("poetry transform: no answer to {peer}: {why}"),
        }
        cx.transport().lose_connection();
    }
}

/// The transformation server's factory: netstring requests of at most `max_request` bytes
/// (a longer one is refused before it is buffered, and the connection closed).
pub fn server_factory(max_request: usize, verbose: bool) -> impl ProtocolFactory {
    Factory::for_protocol(move || {
        StringReceiver::netstring(TransformProtocol { verbose }).with_max_length(max_request)
    })
}

/// Why a transform gave no poem back.
#[derive(Debug)]
pub struct TransformFailed(pub Reason);

impl fmt::Display for TransformFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the transform server answered nothing: {}",
            torsion::error::Chain(&self.0)
        )
    }
}

impl std::error::Error for TransformFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The client's protocol (the tutorial's `TransformClientProtocol`): sends the request, fires
/// the Deferred with the answer.
struct TransformClient {
    request: Vec<u8>,
    answer: Resolver<Vec<u8>>,
}

impl StringHandler for TransformClient {
    fn connection_made(&mut self, cx: &mut StringContext<'_, '_>) {
        let _ = cx.send_string(&std::mem::take(&mut self.request));
    }

    fn string_received(&mut self, cx: &mut StringContext<'_, '_>, poem: &[u8]) {
        let _ = self.answer.callback(poem.to_vec());
        cx.transport().lose_connection();
    }

    fn connection_lost(&mut self, _: &mut StringContext<'_, '_>, reason: Reason) {
        // Does nothing once the answer came.
        let _ = self.answer.errback(Failure::new(TransformFailed(reason)));
    }
}

/// Asks the server at `address` for `transform` of `poem` (the tutorial's
/// `TransformProxy.xform`): a Deferred that fires with the new poem, or fails when the server
/// cannot be reached within `timeout`, answers nothing, or answers more than `max_answer`
/// bytes. The connection is made through a TCP client endpoint and
/// [`connect_protocol`](torsion::endpoints::connect_protocol).
pub fn transform_poem(
    reactor: &Reactor,
    address: &Address,
    transform: Transform,
    poem: &[u8],
    timeout: Duration,
    max_answer: usize,
) -> Deferred<Vec<u8>> {
    let (d, fire) = Deferred::new();
    let endpoint = TcpClientEndpoint::new(reactor, &address.host, address.port).timeout(timeout);
    let client = StringReceiver::netstring(TransformClient {
        request: request(transform, poem),
        answer: fire.clone(),
    })
    .with_max_length(max_answer);
    let connecting = connect_protocol(&endpoint, client).add_both(move |connected| {
        if let Err(why) = connected {
            let _ = fire.errback(why);
        }
        Ok(())
    });
    drop(connecting);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cummingsify_lowers_the_poem() {
        assert_eq!(
            answer("cummingsify.I Sing Of Olaf, ÉTÉ".as_bytes()).unwrap(),
            "i sing of olaf, été".as_bytes()
        );
        assert_eq!(
            answer(b"cummingsify.A\xffB").unwrap(),
            b"a\xffb",
            "not UTF-8: ASCII letters only"
        );
        assert_eq!(answer(b"cummingsify.").unwrap(), b"");
        assert_eq!(
            answer(b"cummingsify.a.b.C").unwrap(),
            b"a.b.c",
            "only the first dot splits"
        );
    }

    #[test]
    fn bad_requests_are_told_apart() {
        assert_eq!(answer(b"cummingsify"), Err(BadRequest::NoDot));
        let e = answer(b"shout.hello").unwrap_err();
        assert_eq!(e, BadRequest::Unknown(UnknownTransform("shout".into())));
        assert_eq!(
            e.to_string(),
            "no transform is named \"shout\" (known: cummingsify)"
        );
        assert!(matches!(answer(b"\xff.x"), Err(BadRequest::Unknown(_))));
    }

    use torsion::testing::StringTransport;

    #[test]
    fn the_server_answers_one_netstring_and_closes() {
        let t = StringTransport::new().unwrap();
        let mut p = server_factory(DEFAULT_MAX_REQUEST, false)
            .build_protocol(&t.transport().peer())
            .unwrap();
        t.connect(&mut *p);
        t.receive(&mut *p, b"18:cummings");
        assert!(t.value().is_empty() && !t.disconnecting());
        t.receive(&mut *p, b"ify.Hello ,");
        assert_eq!(t.value(), b"6:hello ,");
        assert!(t.disconnecting());
    }

    #[test]
    fn the_server_answers_a_bad_request_with_nothing() {
        for request in [&b"5:hello,"[..], b"7:shout.x,", b"5:hello"] {
            let t = StringTransport::new().unwrap();
            let mut p = server_factory(DEFAULT_MAX_REQUEST, false)
                .build_protocol(&t.transport().peer())
                .unwrap();
            t.connect(&mut *p);
            t.receive(&mut *p, request);
            assert!(t.value().is_empty(), "{request:?}");
            assert_eq!(t.disconnecting(), request != b"5:hello", "{request:?}");
        }
    }

    #[test]
    fn the_server_refuses_an_over_long_request_before_buffering_it() {
        let t = StringTransport::new().unwrap();
        let mut p = server_factory(100, false)
            .build_protocol(&t.transport().peer())
            .unwrap();
        t.connect(&mut *p);
        t.receive(&mut *p, b"101:");
        assert!(t.value().is_empty());
        assert!(t.disconnecting(), "refused from the length alone");
    }

    #[test]
    fn a_request_round_trips() {
        let r = request(Transform::Cummingsify, b"Poem.With.Dots");
        assert_eq!(answer(&r).unwrap(), b"poem.with.dots");
        assert_eq!("cummingsify".parse(), Ok(Transform::Cummingsify));
    }
}
