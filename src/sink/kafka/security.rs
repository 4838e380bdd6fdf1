//! TLS and SASL settings of the Kafka sink, with TiCDC's parameter names, and the
//! [`Secret`] that keeps a password out of every `Debug`, log line and error.
//!
//! | parameter | meaning |
//! |---|---|
//! | `enable-tls=true` | connect with TLS (implied by `ca`, `cert` or `key`) |
//! | `ca=/path/ca.pem` | PEM file of the CA(s) that signed the brokers' certificates (default: the system's trust store) |
//! | `cert=/path/client.pem`, `key=/path/client.key` | PEM client certificate and its private key, for brokers that ask for one (mutual TLS); both or neither |
//! | `insecure-skip-verify=true` | accept any broker certificate, any host name (default `false`: chain and host name are verified) |
//! | `sasl-mechanism` | `plain`, `scram-sha-256` or `scram-sha-512` (case-insensitive); needed with `sasl-user` |
//! | `sasl-user` | the SASL user |
//! | `sasl-password` | the password, in the URI (shows in shell history and process lists) … |
//! | `sasl-password-file=/path` | … or read from a file when the sink is built (one trailing newline dropped) … |
//! | `sasl-password-env=NAME` | … or from the environment variable `NAME` when the sink is built |
//!
//! Exactly one password source goes with `sasl-user`. Files are checked (readable) and
//! the password read when the sink is built, so a mistake fails there, naming the
//! parameter. Without TLS, SASL runs over `SASL_PLAINTEXT`; with it, over `SASL_SSL`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A password: its `Debug` and `Display` print `[redacted]`, never the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text, for the one place that hands it to the client.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]`, for text a
    /// client produced (its log lines, its error strings).
    #[cfg_attr(not(feature = "librdkafka"), allow(dead_code))]
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A SASL mechanism (`sasl-mechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `plain`: the password travels as is (use it over TLS).
    Plain,
    /// `scram-sha-256`.
    ScramSha256,
    /// `scram-sha-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name Kafka and librdkafka use (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn kafka_name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(value: &str) -> Option<SaslMechanism> {
        match value.to_ascii_lowercase().as_str() {
            "plain" => Some(SaslMechanism::Plain),
            "scram-sha-256" => Some(SaslMechanism::ScramSha256),
            "scram-sha-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }
}

/// TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// SASL settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sasl {
    pub mechanism: SaslMechanism,
    pub user: String,
    pub password: Secret,
}

/// The security parameters as given, before they are checked together.
#[derive(Clone, Debug, Default)]
pub(crate) struct SecurityParams {
    enable_tls: Option<bool>,
    tls: Tls,
    mechanism: Option<SaslMechanism>,
    user: Option<String>,
    /// The password and the parameter it came from.
    password: Option<(Secret, &'static str)>,
}

/// The security parameters' names, in the order the docs list them.
pub(crate) const PARAMS: &[&str] = &[
    "enable-tls",
    "ca",
    "cert",
    "key",
    "insecure-skip-verify",
    "sasl-mechanism",
    "sasl-user",
    "sasl-password",
    "sasl-password-file",
    "sasl-password-env",
];

/// The settings of a connection, checked together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Security {
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
}

#[cfg_attr(not(feature = "librdkafka"), allow(dead_code))]
impl Security {
    /// A NUL character cannot pass to librdkafka (C strings): refused when the sink is
    /// built, naming the parameter (never the value).
    pub fn check_no_nul(&self) -> Result<()> {
        let nul = |text: &str| text.contains('\0');
        let path = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| nul(&p.to_string_lossy()));
        if let Some(tls) = &self.tls {
            for (param, given) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if path(given) {
                    return Err(invalid(param, "contains a NUL character"));
                }
            }
        }
        if let Some(sasl) = &self.sasl {
            if nul(&sasl.user) {
                return Err(invalid("sasl-user", "contains a NUL character"));
            }
            if nul(sasl.password.expose()) {
                return Err(invalid("sasl-password", "contains a NUL character"));
            }
        }
        Ok(())
    }

    /// Kafka's `security.protocol` for these settings.
    pub fn protocol(&self) -> &'static str {
        match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }

    /// The first security parameter that is set, for a client that supports none.
    pub fn first_param(params: &SecurityParams) -> Option<&'static str> {
        let p = params;
        [
            (p.enable_tls == Some(true), "enable-tls"),
            (p.tls.ca.is_some(), "ca"),
            (p.tls.cert.is_some(), "cert"),
            (p.tls.key.is_some(), "key"),
            (p.tls.insecure_skip_verify, "insecure-skip-verify"),
            (p.mechanism.is_some(), "sasl-mechanism"),
            (p.user.is_some(), "sasl-user"),
        ]
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| name)
        .or(p.password.as_ref().map(|(_, name)| *name))
    }

    /// The SASL password, for redacting client output.
    pub fn secret(&self) -> Option<&Secret> {
        self.sasl.as_ref().map(|s| &s.password)
    }
}

impl SecurityParams {
    /// Takes one parameter; `Ok(false)` when `name` is not a security parameter.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool> {
        match name {
            "enable-tls" => self.enable_tls = Some(boolean(name, value)?),
            "ca" => self.tls.ca = Some(readable(name, value)?),
            "cert" => self.tls.cert = Some(readable(name, value)?),
            "key" => self.tls.key = Some(readable(name, value)?),
            "insecure-skip-verify" => self.tls.insecure_skip_verify = boolean(name, value)?,
            "sasl-mechanism" => {
                self.mechanism = Some(SaslMechanism::parse(value).ok_or_else(|| {
                    invalid(
                        name,
                        format!("{value:?}; expected plain, scram-sha-256 or scram-sha-512"),
                    )
                })?)
            }
            "sasl-user" => {
                if value.is_empty() {
                    return Err(invalid(name, "must not be empty"));
                }
                self.user = Some(value.to_string())
            }
            "sasl-password" => self.set_password("sasl-password", Secret::new(value))?,
            "sasl-password-file" => {
                let path = readable(name, value)?;
                let mut text = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(name, format!("cannot read {}: {e}", path.display())))?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                self.set_password("sasl-password-file", Secret::new(text))?
            }
            "sasl-password-env" => {
                // Not the VarError's text: for a value that is not UTF-8 it holds the value.
                let text = std::env::var(value).map_err(|e| {
                    let why = match e {
                        std::env::VarError::NotPresent => "is not set",
                        std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                    };
                    invalid(name, format!("environment variable {value:?} {why}"))
                })?;
                self.set_password("sasl-password-env", Secret::new(text))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_password(&mut self, name: &'static str, password: Secret) -> Result<()> {
        if let Some((_, first)) = &self.password {
            return Err(invalid(
                name,
                format!("the password is already given by {first}; give exactly one of sasl-password, sasl-password-file, sasl-password-env"),
            ));
        }
        if password.expose().is_empty() {
            return Err(invalid(name, "the password is empty"));
        }
        self.password = Some((password, name));
        Ok(())
    }

    /// Checks the parameters together.
    pub fn resolve(&self) -> Result<Security> {
        let tls_files = self.tls.ca.is_some() || self.tls.cert.is_some() || self.tls.key.is_some();
        let tls = match self.enable_tls {
            Some(false) if tls_files || self.tls.insecure_skip_verify => {
                return Err(invalid(
                    "enable-tls",
                    "is false, but ca, cert, key or insecure-skip-verify is given",
                ))
            }
            Some(true) => true,
            _ => tls_files,
        };
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let missing = if self.tls.cert.is_some() {
                "key"
            } else {
                "cert"
            };
            return Err(invalid(
                missing,
                "cert and key go together (the client certificate and its private key)",
            ));
        }
        if self.tls.insecure_skip_verify && !tls {
            return Err(invalid("insecure-skip-verify", "needs enable-tls=true"));
        }
        let sasl = match (&self.mechanism, &self.user, &self.password) {
            (None, None, None) => None,
            (Some(mechanism), Some(user), Some((password, _))) => Some(Sasl {
                mechanism: *mechanism,
                user: user.clone(),
                password: password.clone(),
            }),
            (None, _, _) => {
                return Err(invalid(
                    "sasl-mechanism",
                    "missing: name plain, scram-sha-256 or scram-sha-512 along with sasl-user",
                ))
            }
            (_, None, _) => return Err(invalid("sasl-user", "missing: SASL needs a user")),
            (_, _, None) => {
                return Err(invalid(
                    "sasl-password",
                    "missing: give sasl-password, sasl-password-file or sasl-password-env",
                ))
            }
        };
        Ok(Security {
            tls: tls.then(|| self.tls.clone()),
            sasl,
        })
    }
}

fn invalid(param: &str, reason: impl Into<String>) -> Error {
    Error::KafkaInvalidConfig {
        param: param.to_string(),
        reason: reason.into(),
    }
}

fn boolean(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, format!("{value:?}; expected true or false"))),
    }
}

/// A path to a file that exists and can be read now.
fn readable(name: &str, value: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(invalid(name, "the path is empty"));
    }
    let path = Path::new(value);
    match std::fs::File::open(path) {
        Ok(_) if path.is_file() => Ok(path.to_path_buf()),
        Ok(_) => Err(invalid(name, format!("{value:?} is not a file"))),
        Err(e) => Err(invalid(name, format!("cannot read {value:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(params: &[(&str, &str)]) -> Result<Security> {
        let mut p = SecurityParams::default();
        for (k, v) in params {
            assert!(p.set(k, v)?, "{k} is a security parameter");
        }
        p.resolve()
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.redact("auth hunter2 failed"), "auth [redacted] failed");
        let sec = resolve(&[
            ("sasl-mechanism", "SCRAM-SHA-512"),
            ("sasl-user", "alice"),
            ("sasl-password", "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{sec:?}").contains("hunter2"));
        assert_eq!(sec.protocol(), "sasl_plaintext");
        assert_eq!(sec.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let f = file.to_str().unwrap();
        let sec = resolve(&[
            ("sasl-mechanism", "plain"),
            ("sasl-user", "u"),
            ("sasl-password-file", f),
        ])
        .unwrap();
        assert_eq!(sec.sasl.unwrap().password.expose(), "from-file");
        std::env::set_var("CHANGEFEED_TEST_SASL_PW", "from-env");
        let sec = resolve(&[
            ("sasl-mechanism", "plain"),
            ("sasl-user", "u"),
            ("sasl-password-env", "CHANGEFEED_TEST_SASL_PW"),
            ("enable-tls", "true"),
        ])
        .unwrap();
        assert_eq!(sec.protocol(), "sasl_ssl");
        assert_eq!(sec.sasl.unwrap().password.expose(), "from-env");
    }

    #[test]
    fn bad_combinations_name_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "-").unwrap();
        let pem = pem.to_str().unwrap();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("sasl-user", "u"), ("sasl-password", "p")],
                "sasl-mechanism",
            ),
            (
                &[("sasl-mechanism", "plain"), ("sasl-password", "p")],
                "sasl-user",
            ),
            (
                &[("sasl-mechanism", "plain"), ("sasl-user", "u")],
                "sasl-password",
            ),
            (&[("cert", pem)], "key"),
            (&[("key", pem)], "cert"),
            (&[("enable-tls", "false"), ("ca", pem)], "enable-tls"),
            (&[("insecure-skip-verify", "true")], "insecure-skip-verify"),
        ];
        for (params, param) in cases {
            let e = resolve(params).unwrap_err();
            assert!(
                matches!(&e, Error::KafkaInvalidConfig { param: p, .. } if p == param),
                "{params:?}: {e}"
            );
        }
        let mut p = SecurityParams::default();
        for (k, v, param) in [
            ("ca", "/nonexistent/ca.pem", "ca"),
            ("sasl-mechanism", "gssapi", "sasl-mechanism"),
            ("enable-tls", "yes", "enable-tls"),
            (
                "sasl-password-env",
                "CHANGEFEED_TEST_UNSET_VAR",
                "sasl-password-env",
            ),
        ] {
            let e = p.set(k, v).unwrap_err();
            assert!(
                matches!(&e, Error::KafkaInvalidConfig { param: p, .. } if p == param),
                "{k}={v}: {e}"
            );
        }
        p.set("sasl-password", "secret-1").unwrap();
        let e = p.set("sasl-password", "secret-2").unwrap_err();
        assert!(!e.to_string().contains("secret-"), "{e}");
        assert!(
            resolve(&[("ca", pem)]).unwrap().tls.is_some(),
            "ca implies TLS"
        );
    }
}
