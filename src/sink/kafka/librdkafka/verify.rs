//! Which check of a broker's certificate failed. librdkafka reports every failed
//! verification as "certificate verify failed"; one TLS handshake of our own, with OpenSSL
//! (the library librdkafka links), the sink's CA and the same host name rules, reads
//! OpenSSL's verify result: "certificate has expired", "Hostname mismatch", "unable to get
//! local issuer certificate", … Run only after a connect failed that way; bounded by a
//! timeout; no data is sent.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509VerifyResult;

use crate::error::{Error, Result};
use crate::sink::kafka::security::Tls;

/// Reads the `ca`, `cert` and `key` PEM files as librdkafka will: a CA file with at
/// least one certificate, a certificate, an unencrypted private key that belongs to it.
/// The error names the parameter, never a key's content.
pub(super) fn check_pem_files(tls: &Tls) -> Result<()> {
    use openssl::pkey::PKey;
    use openssl::x509::X509;
    let invalid = |param: &str, reason: String| Error::KafkaInvalidConfig {
        param: param.to_string(),
        reason,
    };
    let read = |param: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| invalid(param, format!("cannot read {}: {e}", path.display())))
    };
    if let Some(ca) = &tls.ca {
        match X509::stack_from_pem(&read("ca", ca)?) {
            Ok(certs) if !certs.is_empty() => {}
            _ => {
                return Err(invalid(
                    "ca",
                    format!("{} holds no PEM certificate", ca.display()),
                ))
            }
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let cert_pem = X509::from_pem(&read("cert", cert)?).map_err(|_| {
            invalid(
                "cert",
                format!("{} is not a PEM certificate", cert.display()),
            )
        })?;
        let key_pem = PKey::private_key_from_pem(&read("key", key)?).map_err(|_| {
            invalid(
                "key",
                format!("{} is not an unencrypted PEM private key", key.display()),
            )
        })?;
        let matches = cert_pem
            .public_key()
            .map(|public| public.public_eq(&key_pem))
            .unwrap_or(false);
        if !matches {
            return Err(invalid(
                "key",
                format!("{} is not the key of {}", key.display(), cert.display()),
            ));
        }
    }
    Ok(())
}

/// The broker address (`HOST:PORT`) in a librdkafka error text such as
/// `ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: …`, or a log line such as
/// `[thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap: Disconnected …`.
pub(super) fn broker_in(reason: &str) -> Option<&str> {
    let s = reason.strip_prefix("[thrd:").unwrap_or(reason);
    let slash = s.find('/')?;
    let s = match s.find("://") {
        Some(i) if i < slash => &s[i + 3..],
        _ => s,
    };
    let addr = &s[..s.find('/')?];
    (addr.contains(':') && !addr.contains(char::is_whitespace)).then_some(addr)
}

/// Whether the listener at `addr` answers a TLS handshake (any certificate accepted,
/// nothing verified, no data sent): `None` when it cannot be reached within `timeout`.
pub(super) fn speaks_tls(addr: &str, timeout: Duration) -> Option<bool> {
    let (host, _) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let socket = addr.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&socket, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let config = connector
        .configure()
        .ok()?
        .verify_hostname(false)
        .use_server_name_indication(false);
    match config.connect(host, stream) {
        Ok(_) => Some(true),
        // A server that chose a cipher (or sent a certificate) speaks TLS, whatever
        // failed after that; one that closed on our hello does not.
        Err(HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid)) => {
            Some(mid.ssl().current_cipher().is_some() || mid.ssl().peer_certificate().is_some())
        }
        Err(HandshakeError::SetupFailure(_)) => None,
    }
}

/// OpenSSL's reason the certificate of the broker at `addr` (`HOST:PORT`) does not verify
/// with `tls`'s CA (the system's when none is given) and host name `HOST`. `None` when it
/// verifies, or when the handshake could not get that far within `timeout`.
pub(super) fn verify_failure(addr: &str, tls: &Tls, timeout: Duration) -> Option<String> {
    let (host, _) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    match &tls.ca {
        Some(ca) => builder.set_ca_file(ca).ok()?,
        None => builder.set_default_verify_paths().ok()?,
    }
    let connector = builder.build();
    let socket = addr.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&socket, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    // `connect` checks the host name (or the IP address) against the certificate.
    match connector.connect(host, stream) {
        Ok(_) => None,
        Err(HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid)) => {
            let result = mid.ssl().verify_result();
            (result != X509VerifyResult::OK).then(|| result.error_string().to_string())
        }
        Err(HandshakeError::SetupFailure(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_read_from_librdkafkas_text() {
        assert_eq!(
            broker_in("ssl://127.0.0.1:41357/bootstrap: SSL handshake failed: x"),
            Some("127.0.0.1:41357")
        );
        assert_eq!(
            broker_in("sasl_ssl://kafka-1.example:9093/2: Receive failed"),
            Some("kafka-1.example:9093")
        );
        assert_eq!(
            broker_in("[thrd:127.0.0.1:40091/bootstrap]: 127.0.0.1:40091/bootstrap: Disconnected"),
            Some("127.0.0.1:40091")
        );
        assert_eq!(
            broker_in("[thrd:ssl://127.0.0.1:4/bootstrap]: ssl://127.0.0.1:4/bootstrap: SSL"),
            Some("127.0.0.1:4")
        );
        assert_eq!(broker_in("1/1 brokers are down"), None);
    }

    #[test]
    fn nothing_listening_is_no_answer() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        assert_eq!(
            verify_failure(&addr, &Tls::default(), Duration::from_secs(1)),
            None
        );
        assert_eq!(speaks_tls(&addr, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_listener_that_closes_on_the_hello_does_not_speak_tls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let closer = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            drop(conn);
        });
        assert_eq!(speaks_tls(&addr, Duration::from_secs(2)), Some(false));
        closer.join().unwrap();
    }
}
