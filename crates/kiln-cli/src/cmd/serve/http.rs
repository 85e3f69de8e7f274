//! The HTTP/1.1 server side `kiln serve` needs, on plain `std::io`: read
//! one request (request line, headers, a `Content-Length` body), write a
//! response with a length, or a Server-Sent Events stream (chunked on
//! HTTP/1.1, close-delimited on HTTP/1.0). Keep-alive as HTTP/1.1 defines
//! it. Chunked request bodies are refused (411): no client of these
//! endpoints needs them.

use std::io::{self, BufRead, Read, Write};

/// Largest request body read (413 beyond).
pub const MAX_BODY: usize = 8 << 20;
/// Longest request or header line.
const MAX_LINE: usize = 8 << 10;
/// Most header lines in one request.
const MAX_HEADERS: usize = 100;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The target's path, query string removed.
    pub path: String,
    /// HTTP/1.0 (no chunked responses, no keep-alive unless asked for).
    pub http10: bool,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client allows another request on this connection.
    pub keep_alive: bool,
}

impl Request {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request that cannot be read: answer `status` and close the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

fn fail<T>(status: u16, message: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError {
        status,
        message: message.into(),
    })
}

/// What reading the next request on a connection gave.
#[derive(Debug)]
pub enum ReadOutcome {
    Request(Request),
    /// The client closed the connection (or went idle) between requests,
    /// or vanished mid-request: nothing to answer.
    Closed,
    Error(HttpError),
}

enum Line {
    Text(String),
    Eof,
}

/// One line without its `\r\n` (or bare `\n`); errors on an over-long line
/// or one that is not UTF-8.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Result<Line, HttpError>> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n == 0 || buf.last() != Some(&b'\n') {
        if n >= MAX_LINE {
            return Ok(fail(
                431,
                format!("a header line is longer than {MAX_LINE} bytes"),
            ));
        }
        return Ok(Ok(Line::Eof));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(match std::str::from_utf8(buf) {
        Ok(s) => Ok(Line::Text(s.to_string())),
        Err(_) => fail(400, "the request head is not valid UTF-8"),
    })
}

/// Read the next request from `r`. `w` is the same connection's writing
/// side, for the `100 Continue` that `Expect: 100-continue` asks for.
pub fn read_request(r: &mut impl BufRead, w: &mut impl Write) -> ReadOutcome {
    match read_request_inner(r, w) {
        Ok(Ok(Some(req))) => ReadOutcome::Request(req),
        Ok(Ok(None)) => ReadOutcome::Closed,
        Ok(Err(e)) => ReadOutcome::Error(e),
        Err(e) => match e.kind() {
            // A request that stalls mid-way gets a 408; idle is `Closed`
            // (handled below by the empty first line).
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadOutcome::Error(HttpError {
                status: 408,
                message: "timed out reading the request".into(),
            }),
            _ => ReadOutcome::Closed,
        },
    }
}

type Inner = io::Result<Result<Option<Request>, HttpError>>;

fn read_request_inner(r: &mut impl BufRead, w: &mut impl Write) -> Inner {
    let mut buf = Vec::new();
    // The request line; empty lines before it are skipped (RFC 9112 2.2).
    let line = loop {
        let first = match read_line(r, &mut buf) {
            Ok(l) => l,
            // Idle timeout between requests: close quietly.
            Err(e)
                if buf.is_empty()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                return Ok(Ok(None))
            }
            Err(e) => return Err(e),
        };
        match first {
            Err(e) => return Ok(Err(e)),
            Ok(Line::Eof) => return Ok(Ok(None)),
            Ok(Line::Text(t)) if t.is_empty() => continue,
            Ok(Line::Text(t)) => break t,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(fail(400, format!("malformed request line {line:?}")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Ok(fail(
                505,
                format!("unsupported protocol version {version:?}"),
            ))
        }
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(fail(400, format!("malformed method {method:?}")));
    }
    if !target.starts_with('/') {
        return Ok(fail(
            400,
            format!("request target {target:?} is not a path"),
        ));
    }
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();

    let mut headers = Vec::new();
    loop {
        let text = match read_line(r, &mut buf)? {
            Err(e) => return Ok(Err(e)),
            // The client went away inside the head.
            Ok(Line::Eof) => return Ok(Ok(None)),
            Ok(Line::Text(t)) => t,
        };
        if text.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Ok(fail(431, format!("more than {MAX_HEADERS} header lines")));
        }
        let Some((name, value)) = text.split_once(':') else {
            return Ok(fail(400, format!("malformed header line {text:?}")));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Ok(fail(400, format!("malformed header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path,
        http10,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let conn = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let has = |tok: &str| conn.split(',').any(|t| t.trim() == tok);
    req.keep_alive = if http10 {
        has("keep-alive")
    } else {
        !has("close")
    };

    if req.header("transfer-encoding").is_some() {
        return Ok(fail(
            411,
            "chunked (Transfer-Encoding) request bodies are not supported: send Content-Length",
        ));
    }
    let mut len = None;
    for (n, v) in &req.headers {
        if n != "content-length" {
            continue;
        }
        let parsed = match v.parse::<u64>() {
            Ok(x) if v.bytes().all(|b| b.is_ascii_digit()) => x,
            _ => return Ok(fail(400, format!("bad Content-Length {v:?}"))),
        };
        if len.is_some_and(|l| l != parsed) {
            return Ok(fail(400, "conflicting Content-Length headers"));
        }
        len = Some(parsed);
    }
    // No length and no Transfer-Encoding: no body (RFC 9112 6.3).
    let len = len.unwrap_or(0);
    if len > MAX_BODY as u64 {
        return Ok(fail(
            413,
            format!("request body of {len} bytes is over the limit of {MAX_BODY}"),
        ));
    }
    if len > 0
        && !http10
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    req.body = vec![0; len as usize];
    if let Err(e) = r.read_exact(&mut req.body) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(Ok(None)),
            _ => Err(e),
        };
    }
    Ok(Ok(Some(req)))
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            body: v.to_string().into_bytes(),
            extra_headers: Vec::new(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.extra_headers.push((name, value.into()));
        self
    }
}

/// Headers every response carries (browsers may call the API from a page).
const COMMON: &str = "Server: kiln\r\nAccess-Control-Allow-Origin: *\r\n";

/// Write `resp` with its length; `keep_alive` says whether the connection
/// stays open for another request.
pub fn write_response(w: &mut impl Write, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n{COMMON}Content-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (n, v) in &resp.extra_headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    w.write_all(&out)?;
    w.flush()
}

/// A Server-Sent Events response in progress: `data: ...` events, as
/// HTTP/1.1 chunks, or written raw until the connection closes (HTTP/1.0).
pub struct EventStream<'a, W: Write> {
    w: &'a mut W,
    chunked: bool,
}

impl<'a, W: Write> EventStream<'a, W> {
    /// Write the head of a 200 event stream.
    pub fn start(w: &'a mut W, http10: bool, keep_alive: bool) -> io::Result<Self> {
        let chunked = !http10;
        let framing = if chunked {
            format!(
                "Transfer-Encoding: chunked\r\nConnection: {}\r\n",
                if keep_alive { "keep-alive" } else { "close" }
            )
        } else {
            "Connection: close\r\n".to_string()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\n{COMMON}Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n{framing}\r\n"
        );
        w.write_all(head.as_bytes())?;
        w.flush()?;
        Ok(Self { w, chunked })
    }

    /// Send one event: `data: {data}\n\n` (`data` is one line of JSON).
    pub fn send(&mut self, data: &str) -> io::Result<()> {
        let event = format!("data: {data}\n\n");
        if self.chunked {
            write!(self.w, "{:x}\r\n{event}\r\n", event.len())?;
        } else {
            self.w.write_all(event.as_bytes())?;
        }
        self.w.flush()
    }

    /// End the stream (the last chunk on HTTP/1.1).
    pub fn finish(self) -> io::Result<()> {
        if self.chunked {
            self.w.write_all(b"0\r\n\r\n")?;
        }
        self.w.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(raw: &str) -> (ReadOutcome, Vec<u8>) {
        let mut r = Cursor::new(raw.as_bytes().to_vec());
        let mut w = Vec::new();
        (read_request(&mut r, &mut w), w)
    }

    fn status(raw: &str) -> u16 {
        match read(raw).0 {
            ReadOutcome::Error(e) => e.status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_post_with_body_and_query() {
        let raw =
            "\r\nPOST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcdGET";
        let ReadOutcome::Request(r) = read(raw).0 else {
            panic!()
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/completions");
        assert_eq!(r.body, b"abcd");
        assert!(r.keep_alive && !r.http10);
        assert_eq!(r.header("host"), Some("a"));
    }

    #[test]
    fn keep_alive_rules() {
        let one = |raw: &str| match read(raw).0 {
            ReadOutcome::Request(r) => r.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(!one("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!one("GET / HTTP/1.0\r\n\r\n"));
        assert!(one("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn expect_continue_is_answered() {
        let raw = "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
        let (out, w) = read(raw);
        assert!(matches!(out, ReadOutcome::Request(_)));
        assert_eq!(w, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn bad_requests() {
        assert_eq!(status("garbage\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status(&big), 413);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(status(&long), 431);
    }

    #[test]
    fn short_body_or_eof_is_closed() {
        assert!(matches!(read("").0, ReadOutcome::Closed));
        assert!(matches!(
            read("POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab").0,
            ReadOutcome::Closed
        ));
    }

    #[test]
    fn event_stream_framing() {
        let mut w = Vec::new();
        let mut s = EventStream::start(&mut w, false, true).unwrap();
        s.send("{}").unwrap();
        s.finish().unwrap();
        let t = String::from_utf8(w).unwrap();
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(t.contains("Transfer-Encoding: chunked\r\n"));
        assert!(t.ends_with("\r\n\r\na\r\ndata: {}\n\n\r\n0\r\n\r\n"));
    }
}
