//! Reaching a broker with a bound, and telling whether it still speaks protocol v0 (the
//! kafka-rust client), or whether it answers Kafka over PLAINTEXT at all (the librdkafka
//! client, when a TLS handshake was dropped).
//!
//! The kafka crate connects without a timeout and speaks only API version 0. Kafka 4.0
//! removed the oldest versions of Produce, Fetch and others (KIP-896) and drops a
//! connection that uses them, so the crate would fail every send with an I/O error and
//! a naive retry loop would run for ever. Before each producer is created we send one
//! ApiVersions v0 request (every broker since 0.10 answers it) over a socket of our own,
//! connected with the sink's dial timeout:
//!
//! * nobody answers within the timeout → the broker is unreachable (retryable);
//! * Fetch's minimum version is 4 or more → Kafka ≥ 4.0: `CDC:ErrKafkaUnsupportedBroker`.
//!   Not Produce's: Kafka 4.x still *lists* Produce v0–v2 there although it rejects
//!   them (KAFKA-18659), while Fetch v0–v3 are gone from the list (minimum 0 on 3.x).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const API_VERSIONS_KEY: i16 = 18;
const FETCH_KEY: i16 = 1;
const CORRELATION_ID: i32 = 0x0cdc;
const CLIENT_ID: &[u8] = b"changefeed-probe";
/// Longest ApiVersions response accepted (a real one is a few hundred bytes).
const MAX_RESPONSE: i32 = 1 << 20;

/// What the probe learned about one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrokerVersions {
    /// Fetch's lowest supported version, if listed.
    #[cfg_attr(not(feature = "kafka-rust"), allow(dead_code))]
    pub fetch_min: Option<i16>,
}

impl BrokerVersions {
    /// Kafka 4.0 and later no longer accept the protocol v0 requests this client sends.
    #[cfg_attr(not(feature = "kafka-rust"), allow(dead_code))]
    pub fn rejects_v0(&self) -> bool {
        self.fetch_min.is_some_and(|v| v >= 4)
    }
}

/// Connects to `addr` within `timeout` and asks for its API versions.
pub(crate) fn probe(addr: &str, timeout: Duration) -> io::Result<BrokerVersions> {
    let mut stream = connect(addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;

    // Request header v1 (api key, api version, correlation id, client id); the v0 body
    // is empty. Framed by a 4-byte length.
    let mut request = Vec::with_capacity(32);
    request.extend_from_slice(&API_VERSIONS_KEY.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    request.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    request.extend_from_slice(CLIENT_ID);
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream.write_all(&frame)?;

    // Response: length, correlation id, error code, then `count` entries of
    // (api key, min version, max version), all big-endian.
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(10..=MAX_RESPONSE).contains(&len) {
        return Err(bad(format!("ApiVersions response of {len} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    let i16_at = |at: usize| i16::from_be_bytes([body[at], body[at + 1]]);
    let i32_at =
        |at: usize| i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    if i32_at(0) != CORRELATION_ID {
        return Err(bad(format!("ApiVersions correlation id {}", i32_at(0))));
    }
    let error = i16_at(4);
    if error != 0 {
        return Err(bad(format!("ApiVersions error code {error}")));
    }
    let count = i32_at(6);
    if count < 0 || 10 + count as usize * 6 > body.len() {
        return Err(bad(format!(
            "ApiVersions lists {count} entries in {len} bytes"
        )));
    }
    let fetch_min = (0..count as usize)
        .map(|i| 10 + i * 6)
        .find(|&at| i16_at(at) == FETCH_KEY)
        .map(|at| i16_at(at + 2));
    Ok(BrokerVersions { fetch_min })
}

fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn nobody_listening_is_an_io_error_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert!(probe(&addr, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn parses_a_response_and_spots_kafka_4() {
        for (fetch_min, rejects) in [(0i16, false), (4, true)] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut req).unwrap();
                assert_eq!(i16::from_be_bytes([req[0], req[1]]), API_VERSIONS_KEY);
                let mut body = Vec::new();
                body.extend_from_slice(&req[4..8]); // correlation id
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&2i32.to_be_bytes());
                for (key, min, max) in [(0i16, 0i16, 11i16), (FETCH_KEY, fetch_min, 17)] {
                    for v in [key, min, max] {
                        body.extend_from_slice(&v.to_be_bytes());
                    }
                }
                s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
                s.write_all(&body).unwrap();
            });
            let v = probe(&addr, Duration::from_secs(5)).unwrap();
            server.join().unwrap();
            assert_eq!(v.fetch_min, Some(fetch_min));
            assert_eq!(v.rejects_v0(), rejects);
        }
    }
}
