//! A small blocking HTTP client for tests (ureq), returning every status as a [`Response`].

use std::sync::mpsc;
use std::time::Duration;

/// A response: status, headers (lowercase names, in order), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// For responses from the echo upstream: a header the upstream received.
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()
            .get("headers")?
            .get(name.to_ascii_lowercase())?
            .as_str()
            .map(str::to_owned)
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl Request {
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = t;
        self
    }

    /// Send on a fresh agent (new connection).
    pub fn send(&self) -> Result<Response, String> {
        self.send_with(&agent())
    }

    /// Send on `agent`, reusing its pooled connections.
    pub fn send_with(&self, agent: &ureq::Agent) -> Result<Response, String> {
        let mut req = agent.request(&self.method, &self.url).timeout(self.timeout);
        for (n, v) in &self.headers {
            req = req.set(n, v);
        }
        let result = if self.body.is_empty() && self.method == "GET" {
            req.call()
        } else {
            req.send_bytes(&self.body)
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Ok(into_response(resp)),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn into_response(resp: ureq::Response) -> Response {
    let status = resp.status();
    let mut headers = Vec::new();
    for name in resp.headers_names() {
        for value in resp.all(&name) {
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    let body = resp.into_string().unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

/// A keep-alive agent.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    Request::get(url).timeout(Duration::from_secs(5)).send()
}

/// Send `n` requests from `k` client threads, each thread on its own keep-alive connection.
/// `make(i)` builds request number `i`; results come back in request order.
pub fn parallel(
    k: usize,
    n: usize,
    make: impl Fn(usize) -> Request + Sync,
) -> Vec<Result<Response, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for t in 0..k.max(1) {
            let tx = tx.clone();
            let make = &make;
            scope.spawn(move || {
                let agent = agent();
                let mut i = t;
                while i < n {
                    let _ = tx.send((i, make(i).send_with(&agent)));
                    i += k.max(1);
                }
            });
        }
    });
    drop(tx);
    let mut results: Vec<(usize, Result<Response, String>)> = rx.into_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Tally of statuses (transport errors count as status 0).
pub fn status_counts(
    results: &[Result<Response, String>],
) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in results {
        *counts
            .entry(r.as_ref().map(|r| r.status).unwrap_or(0))
            .or_insert(0) += 1;
    }
    counts
}

/// Send raw bytes on a new connection and return the status code of the response (for requests
/// a well-behaved client library refuses to send, such as header values that are not UTF-8, and
/// for requests the server answers before it has read them: oversized headers or bodies).
///
/// The request is written on its own thread while this one reads, so a response that comes back
/// early (say a 431 or 413 followed by the server closing the connection) is read, whether or not
/// the rest of the request could still be written. A transport error before any status line is an
/// `Err`: the status is never guessed.
pub fn raw_status(port: u16, request: &[u8]) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let request = request.to_vec();
    std::thread::scope(|scope| {
        // A write error (the server closed early) is expected in that case: the reader decides.
        scope.spawn(move || {
            let _ = writer.write_all(&request);
        });
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                Ok(_) => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return Err(format!(
                        "connection closed after {:?}",
                        String::from_utf8_lossy(&head)
                    ));
                }
                Err(e) => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return Err(e.to_string());
                }
            }
        }
        // Unblock the writer if it is still sending: the status is all we need.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP status line: {line:?}"))
    })
}
