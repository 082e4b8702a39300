//! Typed names, parsed once at the edge and passed inward (STYLE habit 2).
//!
//! Every type here can only be built by parsing, so holding one proves the value is
//! valid for the OCI distribution-spec grammar and safe to use in an object path.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use thiserror::Error;

/// Why a name failed to parse. Each variant maps to one OCI error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("invalid digest: {0}")]
    Digest(String),
    #[error("unsupported digest algorithm {0:?}: sha256 and sha512 are supported")]
    UnsupportedAlgorithm(String),
    #[error("invalid repository name: {0}")]
    Repository(String),
    #[error("invalid tag: {0}")]
    Tag(String),
    #[error("invalid upload id")]
    UploadId,
}

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest `algorithm:hex`, e.g. `sha256:e3b0…`. The hex is lowercase and of
/// the algorithm's exact length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The encoded part (lowercase hex).
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_bytes(Algorithm::Sha256, &sha2::Sha256::digest(data))
    }
    /// The digest of `data` under `algorithm`.
    pub fn compute(algorithm: Algorithm, data: &[u8]) -> Digest {
        use sha2::Digest as _;
        match algorithm {
            Algorithm::Sha256 => Digest::from_bytes(algorithm, &sha2::Sha256::digest(data)),
            Algorithm::Sha512 => Digest::from_bytes(algorithm, &sha2::Sha512::digest(data)),
        }
    }
    /// Builds a digest from raw hash output.
    ///
    /// # Panics
    /// When `bytes` is not the algorithm's output length (a programming error).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        assert_eq!(bytes.len() * 2, algorithm.hex_len(), "hash output length");
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Digest { algorithm, hex }
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::Digest(truncate(s));
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        // The OCI grammar: algorithm-component [+._-] ..., encoded [a-zA-Z0-9=_-]+.
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !alg_ok
            || hex.is_empty()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        {
            return Err(bad());
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(NameError::UnsupportedAlgorithm(truncate(other))),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The longest repository name accepted. Clients cap `host[:port]/name` at 255
/// characters, so the name alone can never be longer.
pub const MAX_REPOSITORY_LEN: usize = 255;

/// A repository name: one or more `/`-separated components, each
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most 255 characters in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The path components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &b[start..i] {
            b"." | b"_" | b"__" => {}
            run if run.iter().all(|&x| x == b'-') => {}
            _ => return false,
        }
    }
    true
}

impl FromStr for RepositoryName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Repository("empty name".into()));
        }
        if s.len() > MAX_REPOSITORY_LEN {
            return Err(NameError::Repository(format!(
                "longer than {MAX_REPOSITORY_LEN} characters"
            )));
        }
        for c in s.split('/') {
            if !valid_component(c) {
                return Err(NameError::Repository(format!(
                    "component {:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
                    truncate(c)
                )));
            }
        }
        Ok(RepositoryName(s.to_owned()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        if !first_ok
            || b.len() > 128
            || !b
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x))
        {
            return Err(NameError::Tag(truncate(s)));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// A manifest reference: a tag or a digest, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    /// Anything with a `:` must be a digest (tags cannot contain one).
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// An upload session id: 128 random bits in the lowercase hyphenated form of a UUID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id: 128 random bits from the OS, written in a UUID's shape (the
    /// version and variant digits are random too: the id is a handle no one can
    /// guess, not an RFC 9562 UUID). Ids of the earlier form, version-4 UUIDs with 122
    /// random bits, parse the same.
    pub fn random() -> UploadId {
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let h = Digest::from_bytes(Algorithm::Sha256, &[b, [0; 16]].concat()).hex;
        UploadId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, &x)| match i {
                8 | 13 | 18 | 23 => x == b'-',
                _ => x.is_ascii_digit() || (b'a'..=b'f').contains(&x),
            });
        if ok {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(NameError::UploadId)
        }
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

/// Bounds echoed input in error messages so a hostile name cannot flood a log line.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_parse_and_roundtrip() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
        let d512 = Digest::compute(Algorithm::Sha512, b"abc");
        assert_eq!(d512.to_string().parse::<Digest>().unwrap(), d512);
    }

    #[test]
    fn malformed_digests_are_rejected() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../etc/passwd",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(NameError::Digest(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(NameError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn repository_grammar() {
        for good in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e/f",
            "my-app",
            "my--app",
            "a.b",
            "a_b",
            "a__b",
            "0",
            "x/y-z.w__v",
        ] {
            assert!(good.parse::<RepositoryName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "Library/ubuntu",
            "a//b",
            "/a",
            "a/",
            "..",
            "a/../b",
            "a/./b",
            "-a",
            "a-",
            "a___b",
            "a._b",
            "a b",
            "a:b",
            "ä",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
        assert!("a".repeat(256).parse::<RepositoryName>().is_err());
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            EMPTY_SHA256.parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!("sha256:abc".parse::<Reference>().is_err());
    }

    #[test]
    fn upload_ids() {
        let id = UploadId::random();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert_ne!(UploadId::random(), id);
        // All 128 bits are random: every one of the 32 digits varies across ids, the
        // version (14th character) and variant (19th) digits of a UUID among them.
        let ids: Vec<String> = (0..256)
            .map(|_| UploadId::random().as_str().replace('-', ""))
            .collect();
        for position in 0..32 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(digits.len() > 1, "digit {position} never varies");
        }
        // Ids of the earlier form (version-4 UUIDs) still name their sessions.
        assert!("0b6a4c1e-8d8e-4d3f-9a59-3f1f7c2b9e10"
            .parse::<UploadId>()
            .is_ok());
        for bad in [
            "",
            "../x",
            "0123456789abcdef0123456789abcdef",
            "0123456789AB-cdef-0123-4567-89abcdef0123",
        ] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsed_repository_names_are_path_safe(s in "[a-z0-9._/-]{1,40}") {
            if let Ok(r) = s.parse::<RepositoryName>() {
                prop_assert!(r.components().all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with('_')));
            }
        }

        #[test]
        fn digest_parser_never_panics(s in "\\PC{0,140}") {
            let _ = s.parse::<Digest>();
            let _ = s.parse::<Reference>();
        }
    }
}
