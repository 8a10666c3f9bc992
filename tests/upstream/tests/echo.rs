//! End-to-end tests of the echo server over loopback, with `ureq` and with a
//! raw `TcpStream` where byte-level control is needed (repeated headers,
//! keep-alive, resets, client aborts).

// Like #[test] bodies (see clippy.toml), the helpers below stop loudly on
// unexpected results; clippy only exempts code inside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use palisade_upstream::{Stats, Upstream};
use serde_json::{json, Value};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn start() -> Upstream {
    Upstream::start("127.0.0.1:0").expect("start upstream")
}

fn url(upstream: &Upstream, path_and_query: &str) -> String {
    format!("http://{}{}", upstream.addr(), path_and_query)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(CLIENT_TIMEOUT).build()
}

/// Sends the request; a >= 400 status is a response here, not an error.
fn send(request: ureq::Request, body: Option<&str>) -> ureq::Response {
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("request failed: {err}"),
    }
}

fn json_body(response: ureq::Response) -> Value {
    let text = response.into_string().expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

fn get(upstream: &Upstream, path_and_query: &str) -> ureq::Response {
    send(agent().get(&url(upstream, path_and_query)), None)
}

/// Polls `condition` until it holds or `within` elapses.
fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// A raw HTTP/1.1 response: status code, lowercase headers, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Reads one Content-Length delimited response (what the echo server sends).
fn read_response(reader: &mut impl BufRead) -> RawResponse {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    RawResponse {
        status,
        headers,
        body,
    }
}

#[test]
fn echoes_method_path_query_headers_and_body() {
    let upstream = start();
    let response = send(
        agent()
            .post(&url(&upstream, "/a/b?x=1&y=hello%20world&x=2&z=a+b"))
            .set("X-Custom", "Value 1")
            .set("Content-Type", "application/json"),
        Some(r#"{"k":[1,2],"s":"t"}"#),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let echo = json_body(response);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/a/b");
    assert_eq!(echo["query"], "x=1&y=hello%20world&x=2&z=a+b");
    assert_eq!(
        echo["args"],
        json!({"x": "2", "y": "hello world", "z": "a b"})
    );
    assert_eq!(echo["headers"]["x-custom"], "Value 1");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(
        echo["headers"]["host"],
        format!("127.0.0.1:{}", upstream.port())
    );
    assert_eq!(echo["body"], r#"{"k":[1,2],"s":"t"}"#);
    assert_eq!(echo["body_json"], json!({"k": [1, 2], "s": "t"}));
    assert_eq!(echo["body_len"], 19);
}

#[test]
fn non_json_body_and_no_query() {
    let upstream = start();
    let response = send(agent().put(&url(&upstream, "/plain")), Some("just text"));
    let echo = json_body(response);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/plain");
    assert_eq!(echo["query"], "");
    assert_eq!(echo["args"], json!({}));
    assert_eq!(echo["body"], "just text");
    assert_eq!(echo["body_json"], Value::Null);
    assert_eq!(echo["body_len"], 9);

    let echo = json_body(get(&upstream, "/"));
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["body"], "");
    assert_eq!(echo["body_json"], Value::Null);
    assert_eq!(echo["body_len"], 0);
}

#[test]
fn repeated_request_headers_are_joined() {
    let upstream = start();
    let mut stream = connect(upstream.addr());
    stream
        .write_all(
            b"GET /h HTTP/1.1\r\nhost: x\r\nX-Multi: one\r\nx-multi: two\r\n\
              connection: close\r\n\r\n",
        )
        .unwrap();
    let response = read_response(&mut BufReader::new(stream));
    assert_eq!(response.status, 200);
    let echo: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["headers"]["x-multi"], "one, two");
}

#[test]
fn status_control_via_header_and_query() {
    let upstream = start();

    let response = send(
        agent()
            .get(&url(&upstream, "/s"))
            .set("x-upstream-status", "503"),
        None,
    );
    assert_eq!(response.status(), 503);
    assert_eq!(json_body(response)["path"], "/s");

    let response = get(&upstream, "/s?upstream_status=404");
    assert_eq!(response.status(), 404);
    assert_eq!(json_body(response)["args"]["upstream_status"], "404");

    let response = get(&upstream, "/s?upstream_status=201");
    assert_eq!(response.status(), 201);

    // The header wins over the query parameter.
    let response = send(
        agent()
            .get(&url(&upstream, "/s?upstream_status=404"))
            .set("x-upstream-status", "418"),
        None,
    );
    assert_eq!(response.status(), 418);
}

#[test]
fn invalid_control_is_a_400() {
    let upstream = start();
    let response = send(
        agent()
            .get(&url(&upstream, "/"))
            .set("x-upstream-status", "abc"),
        None,
    );
    assert_eq!(response.status(), 400);
    let body = json_body(response);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("x-upstream-status"),
        "{body}"
    );
    let response = get(&upstream, "/?upstream_delay_ms=soon");
    assert_eq!(response.status(), 400);
}

#[test]
fn delay_control_via_header_and_query() {
    let upstream = start();
    let delay = Duration::from_millis(300);

    let started = Instant::now();
    let response = send(
        agent()
            .get(&url(&upstream, "/d"))
            .set("x-upstream-delay-ms", "300"),
        None,
    );
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());

    let started = Instant::now();
    let response = get(&upstream, "/d?upstream_delay_ms=300");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}

#[test]
fn delayed_requests_run_concurrently() {
    let upstream = Arc::new(start());
    let delay = Duration::from_millis(1000);
    let barrier = Arc::new(Barrier::new(2));
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let upstream = Arc::clone(&upstream);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                get(&upstream, "/slow?upstream_delay_ms=1000").status()
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().unwrap(), 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= delay, "{elapsed:?}");
    // Sequential handling would take two delays.
    assert!(
        elapsed < delay * 2 - Duration::from_millis(100),
        "{elapsed:?}"
    );
}

#[test]
fn peak_in_flight_counts_parallel_requests() {
    let upstream = Arc::new(start());
    let parallel = 8;
    let barrier = Arc::new(Barrier::new(parallel));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let upstream = Arc::clone(&upstream);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                send(
                    agent()
                        .get(&url(&upstream, "/p"))
                        .set("x-upstream-delay-ms", "1500"),
                    None,
                )
                .status()
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || upstream.stats().in_flight == 8),
        "{:?}",
        upstream.stats()
    );
    for worker in workers {
        assert_eq!(worker.join().unwrap(), 200);
    }
    assert_eq!(
        upstream.stats(),
        Stats {
            in_flight: 0,
            peak_in_flight: 8,
            hits: 8
        }
    );
}

#[test]
fn reset_control_sends_rst_without_response() {
    let upstream = start();
    for request in [
        "GET /r HTTP/1.1\r\nhost: x\r\nx-upstream-reset: 1\r\n\r\n",
        "GET /r?upstream_reset=true HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let mut stream = connect(upstream.addr());
        stream.write_all(request.as_bytes()).unwrap();
        let mut received = Vec::new();
        let result = stream.read_to_end(&mut received);
        assert!(received.is_empty(), "got response bytes: {received:?}");
        match result {
            Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
            Ok(_) => panic!("connection closed gracefully, expected a reset"),
        }
    }
    assert!(eventually(Duration::from_secs(5), || {
        upstream.stats().in_flight == 0
    }));
    assert_eq!(upstream.stats().hits, 2);
}

#[test]
fn reset_happens_after_the_delay() {
    let upstream = start();
    let started = Instant::now();
    let mut stream = connect(upstream.addr());
    stream
        .write_all(b"POST /r HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nx-upstream-reset: 1\r\nx-upstream-delay-ms: 300\r\n\r\nhi")
        .unwrap();
    let mut received = Vec::new();
    let result = stream.read_to_end(&mut received);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(received.is_empty(), "got response bytes: {received:?}");
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[test]
fn ureq_sees_reset_as_an_error() {
    let upstream = start();
    let result = agent()
        .get(&url(&upstream, "/r"))
        .set("x-upstream-reset", "1")
        .call();
    assert!(
        matches!(result, Err(ureq::Error::Transport(_))),
        "{result:?}"
    );
}

#[test]
fn graceful_close_stays_graceful() {
    let upstream = start();
    let mut stream = connect(upstream.addr());
    stream
        .write_all(b"GET /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("clean EOF, no reset");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\"path\":\"/bye\""), "{text}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let upstream = start();
    let stream = connect(upstream.addr());
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..3 {
        let request = format!("POST /k/{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n{i}");
        writer.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut reader);
        assert_eq!(response.status, 200);
        assert!(response.header_values("connection").is_empty());
        let echo: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(echo["path"], format!("/k/{i}"));
        assert_eq!(echo["body_json"], json!(i));
    }
    // An error response does not close the connection either.
    writer
        .write_all(b"GET /k HTTP/1.1\r\nhost: x\r\nx-upstream-status: 500\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).status, 500);
    writer
        .write_all(b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).status, 200);
    assert_eq!(upstream.stats().hits, 5);
}

#[test]
fn client_abort_during_delay_releases_in_flight() {
    let upstream = start();
    let mut stream = connect(upstream.addr());
    stream
        .write_all(b"GET /abort HTTP/1.1\r\nhost: x\r\nx-upstream-delay-ms: 30000\r\n\r\n")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || upstream.stats().in_flight == 1),
        "{:?}",
        upstream.stats()
    );
    drop(stream);
    // Well before the 30 s delay would have elapsed.
    assert!(
        eventually(Duration::from_secs(10), || upstream.stats().in_flight == 0),
        "{:?}",
        upstream.stats()
    );
    assert_eq!(
        upstream.stats(),
        Stats {
            in_flight: 0,
            peak_in_flight: 1,
            hits: 1
        }
    );
}

#[test]
fn stats_endpoints() {
    let upstream = start();
    for _ in 0..3 {
        assert_eq!(get(&upstream, "/count").status(), 200);
    }

    let response = get(&upstream, "/__stats");
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let stats: Stats = serde_json::from_value(json_body(response)).unwrap();
    let expected = Stats {
        in_flight: 0,
        peak_in_flight: 1,
        hits: 3,
    };
    assert_eq!(stats, expected);
    // Control endpoints are not counted.
    assert_eq!(upstream.stats(), expected);

    let response = send(agent().post(&url(&upstream, "/__reset_stats")), Some(""));
    assert_eq!(response.status(), 200);
    let stats: Stats = serde_json::from_value(json_body(response)).unwrap();
    let zero = Stats {
        in_flight: 0,
        peak_in_flight: 0,
        hits: 0,
    };
    assert_eq!(stats, zero);
    assert_eq!(upstream.stats(), zero);

    // Wrong methods are refused, and not counted either.
    let response = get(&upstream, "/__reset_stats");
    assert_eq!(response.status(), 405);
    assert_eq!(response.header("allow"), Some("POST"));
    let response = send(agent().delete(&url(&upstream, "/__stats")), None);
    assert_eq!(response.status(), 405);
    assert_eq!(response.header("allow"), Some("GET"));
    assert_eq!(upstream.stats(), zero);
}

#[test]
fn reset_stats_keeps_current_in_flight_as_peak() {
    let upstream = Arc::new(start());
    let slow = {
        let upstream = Arc::clone(&upstream);
        thread::spawn(move || get(&upstream, "/slow?upstream_delay_ms=1000").status())
    };
    assert!(eventually(Duration::from_secs(5), || {
        upstream.stats().in_flight == 1
    }));
    upstream.reset_stats();
    assert_eq!(
        upstream.stats(),
        Stats {
            in_flight: 1,
            peak_in_flight: 1,
            hits: 0
        }
    );
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(
        upstream.stats(),
        Stats {
            in_flight: 0,
            peak_in_flight: 1,
            hits: 0
        }
    );
}

#[test]
fn extra_response_headers() {
    let upstream = start();
    let response = send(
        agent().get(&url(&upstream, "/h")).set(
            "x-upstream-header",
            "x-a=1, X-B = two words, content-type=text/plain",
        ),
        None,
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("x-a"), Some("1"));
    assert_eq!(response.header("x-b"), Some("two words"));
    // Replaces the default content type; the body is still the echo.
    assert_eq!(response.all("content-type"), vec!["text/plain"]);
    assert_eq!(json_body(response)["path"], "/h");

    let response = get(
        &upstream,
        "/h?upstream_header=x-q%3D1&upstream_header=x-r%3D2",
    );
    assert_eq!(response.header("x-q"), Some("1"));
    assert_eq!(response.header("x-r"), Some("2"));

    // Repeated control headers, and a repeated name gives repeated values.
    let mut stream = connect(upstream.addr());
    stream
        .write_all(
            b"GET /h HTTP/1.1\r\nhost: x\r\nx-upstream-header: set-cookie=a=1\r\n\
              x-upstream-header: set-cookie=b=2, x-one=1\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    let response = read_response(&mut BufReader::new(stream));
    assert_eq!(response.header_values("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(response.header_values("x-one"), vec!["1"]);
    assert_eq!(
        response.header_values("content-type"),
        vec!["application/json"]
    );
}

#[test]
fn custom_response_body() {
    let upstream = start();
    let response = send(
        agent()
            .post(&url(&upstream, "/b"))
            .set("x-upstream-body", r#"{"replaced":true}"#)
            .set("x-upstream-status", "502"),
        Some("ignored"),
    );
    assert_eq!(response.status(), 502);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.into_string().unwrap(), r#"{"replaced":true}"#);

    let response = send(
        agent()
            .get(&url(&upstream, "/b"))
            .set("x-upstream-body", "plain words")
            .set("x-upstream-header", "content-type=text/plain"),
        None,
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.into_string().unwrap(), "plain words");

    let response = get(&upstream, "/b?upstream_body=hello%20there");
    assert_eq!(response.into_string().unwrap(), "hello there");
}

#[test]
fn dropping_the_upstream_closes_the_listener() {
    let upstream = start();
    let addr = upstream.addr();
    assert_eq!(get(&upstream, "/").status(), 200);
    drop(upstream);
    let err = TcpStream::connect(addr).expect_err("listener should be closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}
