//! The tutorial's four public-domain poems, embedded in the program (see `poems/README.md`).

/// A poem bundled with the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poem {
    /// Short name, the file's stem (`ecstasy`).
    pub name: &'static str,
    /// Author and title, for messages.
    pub title: &'static str,
    /// The file name under `poetry/poems/`.
    pub file: &'static str,
    /// The poem's bytes (UTF-8).
    pub text: &'static [u8],
}

/// John Donne, "The Ecstasy" (3,003 bytes).
pub const ECSTASY: Poem = Poem {
    name: "ecstasy",
    title: "John Donne, \"The Ecstasy\"",
    file: "ecstasy.txt",
    text: include_bytes!("../poems/ecstasy.txt"),
};

/// W. B. Yeats, "The Fascination of What's Difficult" (615 bytes).
pub const FASCINATION: Poem = Poem {
    name: "fascination",
    title: "W. B. Yeats, \"The Fascination of What's Difficult\"",
    file: "fascination.txt",
    text: include_bytes!("../poems/fascination.txt"),
};

/// Edgar Allan Poe, "Sonnet – To Science" (653 bytes).
pub const SCIENCE: Poem = Poem {
    name: "science",
    title: "Edgar Allan Poe, \"Sonnet – To Science\"",
    file: "science.txt",
    text: include_bytes!("../poems/science.txt"),
};

/// Ugo Foscolo, "Alla Sera" (577 bytes of Italian UTF-8, with multi-byte characters).
pub const ALLA_SERA: Poem = Poem {
    name: "alla_sera",
    title: "Ugo Foscolo, \"Alla Sera\"",
    file: "alla_sera.txt",
    text: include_bytes!("../poems/alla_sera.txt"),
};

/// All four, in the tutorial's order.
pub const ALL: [Poem; 4] = [ECSTASY, FASCINATION, SCIENCE, ALLA_SERA];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_readme() {
        assert_eq!(ECSTASY.text.len(), 3003);
        assert_eq!(FASCINATION.text.len(), 615);
        assert_eq!(SCIENCE.text.len(), 653);
        assert_eq!(ALLA_SERA.text.len(), 577);
        for p in ALL {
            assert!(std::str::from_utf8(p.text).is_ok(), "{}", p.name);
        }
        let sera = std::str::from_utf8(ALLA_SERA.text).unwrap();
        assert_eq!(sera.chars().count(), 566);
    }
}
