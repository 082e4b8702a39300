//! A small blocking HTTP/1.1 client (plain HTTP only), written for the suite so that it
//! observes exactly what the registry sends: every header as received, no redirects
//! followed, no retries, no content decoding.
//!
//! Each request uses its own connection with `Connection: close`; the suite sends a
//! few hundred small requests, so connection reuse buys nothing and would only add
//! states in which a broken registry could confuse the client.
//!
//! [`read_message`] is the same parser for the server side; the crate's tests use it
//! in a fault-injecting proxy.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest header block accepted from a peer.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted from a peer (the suite's biggest objects are a few MiB; a
/// 16 MiB manifest is the largest thing it sends).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// `host:port` plus the scheme's defaults: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Origin {
    /// Parses `http://host[:port][/]`. HTTPS is not supported: the suite is run against
    /// registries on a local or private network, or through a TLS-terminating proxy.
    pub fn parse_base(url: &str) -> Result<Origin, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(format!(
                "{url:?}: give the registry root (http://host:port), without a path"
            ));
        }
        Self::parse_authority(authority).map_err(|e| format!("{url:?}: {e}"))
    }

    fn parse_authority(authority: &str) -> Result<Origin, String> {
        if authority.is_empty() {
            return Err("no host".to_owned());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port {p:?}"))?,
            ),
            _ => (authority, 80),
        };
        Ok(Origin {
            host: host.to_owned(),
            port,
        })
    }
}

/// A URL the client can request: an origin and a request target (`/path?query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub origin: Origin,
    pub path_and_query: String,
}

impl Target {
    /// Resolves a `Location` (absolute `http://…` or an absolute path) against `base`.
    pub fn resolve(base: &Origin, location: &str) -> Result<Target, String> {
        if let Some(rest) = location.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            return Ok(Target {
                origin: Origin::parse_authority(authority)
                    .map_err(|e| format!("Location {location:?}: {e}"))?,
                path_and_query: path.to_owned(),
            });
        }
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(Target {
                origin: base.clone(),
                path_and_query: location.to_owned(),
            });
        }
        Err(format!(
            "Location {location:?} is neither an absolute http:// URL nor an absolute path"
        ))
    }

    /// The same target with `key=value` appended to its query (value percent-encoded).
    pub fn with_query(&self, key: &str, value: &str) -> Target {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        Target {
            origin: self.origin.clone(),
            path_and_query: format!("{}{sep}{key}={}", self.path_and_query, encode(value)),
        }
    }

    pub fn path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.origin, self.path_and_query)
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body and no `Content-Length` (GET, HEAD, DELETE).
    None,
    /// `Content-Length: n` and the bytes (also for an empty body on POST/PUT/PATCH).
    Bytes(Vec<u8>),
    /// `Transfer-Encoding: chunked`, one wire chunk per element: a streamed body whose
    /// length the client does not announce, as docker sends a layer.
    Chunked(Vec<Vec<u8>>),
}

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: Target,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Request {
    pub fn new(method: &str, target: Target) -> Request {
        Request {
            method: method.to_owned(),
            target,
            headers: Vec::new(),
            body: Body::None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = Body::Bytes(body);
        self
    }

    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.body = Body::Chunked(chunks);
        self
    }

    /// Sends the request on a new connection and reads the whole response.
    ///
    /// Fails on connection and protocol errors only; any HTTP status is a response.
    pub fn send(&self, timeout: Duration) -> Result<Response, String> {
        let what = || format!("{} {}", self.method, self.target);
        let mut stream =
            TcpStream::connect((self.target.origin.host.as_str(), self.target.origin.port))
                .map_err(|e| format!("{}: connect: {e}", what()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{}: socket options: {e}", what()))?;
        let _ = stream.set_nodelay(true);
        // A server may answer before it has read the whole body (a request it refuses
        // by its headers or size) and close; its response is still the answer.
        let written = self.write_to(&mut stream);
        let mut reader = BufReader::new(stream);
        let msg = match (
            read_message(
                &mut reader,
                Framing::Response {
                    head: self.method == "HEAD",
                },
            ),
            written,
        ) {
            (Ok(msg), _) => msg,
            (Err(e), Ok(())) => return Err(format!("{}: reading response: {e}", what())),
            (Err(_), Err(e)) => return Err(format!("{}: sending request: {e}", what())),
        };
        let status = msg
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| msg.start_line.starts_with("HTTP/1.") && (100..600).contains(s))
            .ok_or_else(|| format!("{}: malformed status line {:?}", what(), msg.start_line))?;
        Ok(Response {
            status,
            headers: msg.headers,
            body: msg.body,
        })
    }

    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: valv-conformance/{}\r\n",
            self.method,
            self.target.path_and_query,
            self.target.origin,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match &self.body {
            Body::None => head.push_str("\r\n"),
            Body::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
            Body::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        }
        w.write_all(head.as_bytes())?;
        match &self.body {
            Body::None => {}
            Body::Bytes(b) => w.write_all(b)?,
            Body::Chunked(chunks) => {
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    w.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                    w.write_all(c)?;
                    w.write_all(b"\r\n")?;
                }
                w.write_all(b"0\r\n\r\n")?;
            }
        }
        w.flush()
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// In the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text, lossily, shortened for messages.
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut s: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            s.push('…');
        }
        s
    }
}

/// Which message is being read, for its body framing (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// A request: a body only with `Content-Length` or `Transfer-Encoding: chunked`.
    Request,
    /// A response; `head` when answering HEAD (never a body).
    Response { head: bool },
}

/// A parsed HTTP/1.1 message (either direction).
#[derive(Debug, Clone)]
pub struct Message {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The first value of header `name` (case-insensitive) in `headers`.
fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads one HTTP/1.1 message. `Ok(None)`-like end of stream before any byte is an
/// `UnexpectedEof` error.
pub fn read_message(r: &mut impl BufRead, framing: Framing) -> io::Result<Message> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut head_len = 0usize;
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head_len) as u64 + 1)
            .read_line(line)?;
        head_len += n;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if head_len > MAX_HEAD {
            return Err(bad("header block too large".to_owned()));
        }
        if !line.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-line",
            ));
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        Ok(())
    };
    read_line(&mut line)?;
    let start_line = line.clone();
    let mut headers = Vec::new();
    loop {
        read_line(&mut line)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed header line {line:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let msg_header = |name: &str| find_header(&headers, name).map(str::to_owned);
    let status: Option<u16> = match framing {
        Framing::Response { .. } => start_line.split(' ').nth(1).and_then(|s| s.parse().ok()),
        Framing::Request => None,
    };
    let no_body = match framing {
        Framing::Response { head } => {
            head || matches!(status, Some(s) if s < 200 || s == 204 || s == 304)
        }
        Framing::Request => false,
    };
    let mut body = Vec::new();
    if !no_body {
        let chunked = msg_header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            read_chunked(r, &mut body)?;
        } else if let Some(cl) = msg_header("content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| bad(format!("malformed Content-Length {cl:?}")))?;
            if n > MAX_BODY {
                return Err(bad(format!("body of {n} bytes is too large")));
            }
            body.resize(n, 0);
            r.read_exact(&mut body).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("body shorter than Content-Length {n}: {e}"),
                )
            })?;
        } else if matches!(framing, Framing::Response { .. }) {
            // No framing: the body runs to the end of the connection.
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(bad("body too large".to_owned()));
            }
        }
    }
    Ok(Message {
        start_line,
        headers,
        body,
    })
}

fn read_chunked(r: &mut impl BufRead, body: &mut Vec<u8>) -> io::Result<()> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    loop {
        line.clear();
        r.by_ref().take(1024).read_line(&mut line)?;
        let size_text = line
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let size = usize::from_str_radix(&size_text, 16)
            .map_err(|_| bad(format!("malformed chunk size {:?}", line.trim())))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.by_ref().take(8192).read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("chunked body too large".to_owned()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk not followed by CRLF".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let o = Origin::parse_base("http://127.0.0.1:5000/").expect("parses");
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 5000));
        assert_eq!(
            Origin::parse_base("http://localhost").expect("parses").port,
            80
        );
        assert!(Origin::parse_base("https://x").is_err());
        assert!(Origin::parse_base("http://x:5000/v2/").is_err());
        assert!(Origin::parse_base("http://x:port").is_err());
    }

    #[test]
    fn locations() {
        let base = Origin::parse_base("http://127.0.0.1:5000").expect("parses");
        let t = Target::resolve(&base, "/v2/a/blobs/uploads/x?s=1").expect("relative");
        assert_eq!(t.origin, base);
        assert_eq!(
            t.with_query("digest", "sha256:ab").path_and_query,
            "/v2/a/blobs/uploads/x?s=1&digest=sha256%3Aab"
        );
        let t = Target::resolve(&base, "http://10.0.0.1:81/v2/x").expect("absolute");
        assert_eq!((t.origin.port, t.path()), (81, "/v2/x"));
        assert!(Target::resolve(&base, "v2/x").is_err());
        assert!(Target::resolve(&base, "//host/x").is_err());
    }

    #[test]
    fn parses_framings() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n";
        let m = read_message(&mut &raw[..], Framing::Response { head: false }).expect("parses");
        assert_eq!(m.body, b"abcde");
        assert_eq!(m.header("x-a"), Some("1"));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert!(read_message(&mut &raw[..], Framing::Response { head: false }).is_err());
        let m = read_message(&mut &raw[..], Framing::Response { head: true }).expect("HEAD");
        assert!(m.body.is_empty());
        let raw = b"HTTP/1.1 200 OK\r\n\r\nto the end";
        let m = read_message(&mut &raw[..], Framing::Response { head: false }).expect("EOF body");
        assert_eq!(m.body, b"to the end");
        let raw = b"PUT /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let m = read_message(&mut &raw[..], Framing::Request).expect("request");
        assert!(m.body.is_empty());
    }
}
