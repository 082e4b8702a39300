//! The few X.509 fields valv reads from a certificate: the subject (a client
//! certificate's identity, [`crate::http::conn::Connection::client_subject`]), and the
//! serial number and `notAfter` date (logged when a server certificate is loaded).
//!
//! rustls and webpki verify certificates but do not expose these fields, and a full
//! X.509 parser would be a large dependency for three fields, so this is a small DER
//! reader over the fixed start of a certificate (RFC 5280 §4.1):
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
//! TBSCertificate ::= SEQUENCE {
//!     version [0] EXPLICIT INTEGER OPTIONAL, serialNumber INTEGER,
//!     signature AlgorithmIdentifier, issuer Name,
//!     validity SEQUENCE { notBefore Time, notAfter Time }, subject Name, ... }
//! ```
//!
//! It never decides trust: it only reads certificates that rustls has already parsed
//! (and, for client certificates, verified).

use std::fmt::Write as _;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const UTF8_STRING: u8 = 0x0C;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UNIVERSAL_STRING: u8 = 0x1C;
const BMP_STRING: u8 = 0x1E;

/// A certificate that is not the DER this reader expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed;

/// What valv shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFields {
    /// The subject DN in RFC 4514 form: most specific RDN first, e.g.
    /// `CN=alice,OU=ci,O=Example`.
    pub subject: String,
    /// The serial number, hex (lower case, as encoded).
    pub serial: String,
    /// `notAfter` as RFC 3339 UTC, e.g. `2027-01-31T12:00:00Z`.
    pub not_after: String,
}

/// Reads the subject, serial and `notAfter` of a DER certificate.
///
/// Fails when the DER does not have the shape of RFC 5280's `TBSCertificate` up to the
/// subject.
pub fn fields(der: &[u8]) -> Result<CertFields, Malformed> {
    let mut outer = Reader::new(der);
    let cert = outer.expect(SEQUENCE)?;
    let mut cert = Reader::new(cert);
    let tbs = cert.expect(SEQUENCE)?;
    let mut tbs = Reader::new(tbs);
    if tbs.peek_tag() == Some(VERSION) {
        tbs.next()?;
    }
    let serial = tbs.expect(INTEGER)?;
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Reader::new(tbs.expect(SEQUENCE)?);
    validity.next()?; // notBefore
    let (tag, not_after) = validity.next()?;
    let subject = tbs.expect(SEQUENCE)?;
    Ok(CertFields {
        subject: name(subject)?,
        serial: hex(serial),
        not_after: time(tag, not_after)?,
    })
}

/// The subject DN of a DER certificate ([`CertFields::subject`]).
pub fn subject(der: &[u8]) -> Result<String, Malformed> {
    fields(der).map(|f| f.subject)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A DER reader over one level of nesting: `next` yields (tag, contents).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whole: its tag, its contents, and the bytes of the whole TLV.
    fn next_tlv(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), Malformed> {
        let start = self.rest;
        let (&tag, rest) = self.rest.split_first().ok_or(Malformed)?;
        // Only low tag numbers (single identifier byte) occur in what we read.
        if tag & 0x1F == 0x1F {
            return Err(Malformed);
        }
        let (&first, mut rest) = rest.split_first().ok_or(Malformed)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            // 0x80 is BER's indefinite length, not DER; 4 bytes of length is 4 GiB.
            if n == 0 || n > 4 || rest.len() < n {
                return Err(Malformed);
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(Malformed);
        }
        let (contents, after) = rest.split_at(len);
        let whole = &start[..start.len() - after.len()];
        self.rest = after;
        Ok((tag, contents, whole))
    }

    fn next(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
        self.next_tlv().map(|(tag, contents, _)| (tag, contents))
    }

    fn expect(&mut self, want: u8) -> Result<&'a [u8], Malformed> {
        match self.next()? {
            (tag, contents) if tag == want => Ok(contents),
            _ => Err(Malformed),
        }
    }
}

/// A `Name` (RDNSequence) in RFC 4514 form: RDNs in reverse order, joined by `,`; the
/// attributes of a multi-valued RDN joined by `+`.
fn name(rdn_sequence: &[u8]) -> Result<String, Malformed> {
    let mut rdns = Vec::new();
    let mut seq = Reader::new(rdn_sequence);
    while !seq.is_empty() {
        let mut set = Reader::new(seq.expect(SET)?);
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let mut attribute = Reader::new(set.expect(SEQUENCE)?);
            let oid = oid(attribute.expect(OID)?)?;
            let (tag, value, whole) = attribute.next_tlv()?;
            let value = match string(tag, value) {
                Some(text) => escape(&text),
                // RFC 4514 §2.4: a value that is not a string is `#` and its DER in hex.
                None => format!("#{}", hex(whole)),
            };
            attributes.push(format!("{}={value}", short_name(&oid)));
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// Dotted-decimal form of an OBJECT IDENTIFIER's contents.
fn oid(contents: &[u8]) -> Result<String, Malformed> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in contents.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(Malformed);
        }
        value = (value << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == contents.len() {
            return Err(Malformed);
        }
    }
    if arcs.is_empty() {
        return Err(Malformed);
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// RFC 4514 §3's names (and the usual extras); other types stay dotted-decimal.
fn short_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        other => other,
    }
}

/// The text of a directory string, or `None` for another type or bad encoding.
fn string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING | TELETEX_STRING => {
            String::from_utf8(value.to_vec()).ok()
        }
        BMP_STRING => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        UNIVERSAL_STRING => {
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping, plus control characters as `\XX` so that a subject is
/// always one safe line in a log.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A `Time` (UTCTime or GeneralizedTime, both `…Z` in certificates, RFC 5280
/// §4.1.2.5) as RFC 3339.
fn time(tag: u8, value: &[u8]) -> Result<String, Malformed> {
    let text = std::str::from_utf8(value).map_err(|_| Malformed)?;
    let digits = text.strip_suffix('Z').ok_or(Malformed)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed);
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            // RFC 5280: YY >= 50 is 19YY, else 20YY.
            let yy: u32 = digits[..2].parse().map_err(|_| Malformed)?;
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            (year.to_string(), &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].to_owned(), &digits[4..]),
        _ => return Err(Malformed),
    };
    Ok(format!(
        "{year}-{}-{}T{}:{}:{}Z",
        &rest[0..2],
        &rest[2..4],
        &rest[4..6],
        &rest[6..8],
        &rest[8..10]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SerialNumber};

    fn cert(params: &CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn reads_subject_serial_and_not_after() {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CountryName, "SE");
        p.distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "ci");
        p.distinguished_name.push(DnType::CommonName, "alice");
        p.serial_number = Some(SerialNumber::from_slice(&[0x0a, 0xbc, 0xde]));
        p.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let f = fields(&cert(&p)).expect("fields");
        assert_eq!(f.subject, "CN=alice,OU=ci,O=Example\\, Inc.,C=SE");
        assert_eq!(f.serial, "0abcde");
        assert_eq!(f.not_after, "2031-07-09T00:00:00Z");
    }

    #[test]
    fn generalized_time_after_2049() {
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.not_after = rcgen::date_time_ymd(2101, 12, 31);
        assert_eq!(
            fields(&cert(&p)).expect("fields").not_after,
            "2101-12-31T00:00:00Z"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape(" #a+b;c "), "\\ #a\\+b\\;c\\ ");
        assert_eq!(escape("#x"), "\\#x");
        assert_eq!(escape("a\nb"), "a\\0Ab");
        assert_eq!(escape("é"), "é");
    }

    #[test]
    fn oids() {
        assert_eq!(oid(&[0x55, 0x04, 0x03]).as_deref(), Ok("2.5.4.3"));
        assert_eq!(
            oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01]).as_deref(),
            Ok("1.2.840.113549.1.9.1")
        );
        assert_eq!(oid(&[0x86]), Err(Malformed), "a truncated arc");
        assert_eq!(oid(&[]), Err(Malformed));
    }

    #[test]
    fn non_string_values_are_hex() {
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, INTEGER 5 } } }
        let rdn = [
            0x31, 0x0A, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x02, 0x01, 0x05,
        ];
        assert_eq!(name(&rdn).as_deref(), Ok("CN=#020105"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "x");
        let der = cert(&p);
        assert!(fields(&der).is_ok());
        for cut in 0..der.len() {
            assert_eq!(fields(&der[..cut]), Err(Malformed), "cut at {cut}");
        }
        assert_eq!(fields(b"garbage"), Err(Malformed));
        assert_eq!(fields(&[0x30, 0x80]), Err(Malformed), "indefinite length");
        assert_eq!(fields(&[]), Err(Malformed));
    }
}
