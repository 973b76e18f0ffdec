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

    #[test]
    fn a_request_round_trips() {
        let r = request(Transform::Cummingsify, b"Poem.With.Dots");
        assert_eq!(answer(&r).unwrap(), b"poem.with.dots");
        assert_eq!("cummingsify".parse(), Ok(Transform::Cummingsify));
    }
}
