//! Splitting a sink URI into scheme, host list, path and parameters.
//!
//! Hand-split rather than with `url::Url`, because Kafka URIs list several
//! `host:port` pairs separated by commas, which `url` rejects. Query parameters are
//! decoded with `url::form_urlencoded`.

use crate::error::{Error, Result};

/// A parsed sink URI: `scheme:[//authority][path][?query]`.
#[derive(Clone, Debug)]
pub(crate) struct SinkUri {
    /// The URI as given.
    pub raw: String,
    /// Lowercased scheme.
    pub scheme: String,
    /// What follows `//` up to the path, if the URI has `//`.
    pub authority: Option<String>,
    /// The path (`/abs/path`, `rel/path`, or empty).
    pub path: String,
    /// Decoded query parameters, in order, each name at most once.
    pub params: Vec<(String, String)>,
}

/// Whether parameter `name` holds a secret, whose value never appears in `raw`, errors
/// or logs.
fn is_secret(name: &str) -> bool {
    (name.contains("password") || name.contains("secret"))
        && !name.ends_with("-file")
        && !name.ends_with("-env")
}

/// `raw` with the value of every secret parameter replaced by `[redacted]`.
pub(crate) fn redact(raw: &str) -> String {
    let Some((head, query)) = raw.split_once('?') else {
        return raw.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| {
            let secret = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| is_secret(&name));
            match pair.split_once('=') {
                Some((name, _)) if secret => format!("{name}=[redacted]"),
                _ => pair.to_string(),
            }
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

impl SinkUri {
    /// Splits `raw`. The URI kept in [`SinkUri::raw`] (and so in every error) has its
    /// secrets redacted.
    pub fn parse(raw: &str) -> Result<SinkUri> {
        SinkUri::parse_redacted(raw, &redact(raw))
    }

    fn parse_redacted(input: &str, raw: &str) -> Result<SinkUri> {
        let (scheme, rest) = input.split_once(':').ok_or_else(|| {
            Error::uri(
                raw,
                "missing scheme, e.g. file:out.jsonl or kafka://host:9092/topic",
            )
        })?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(Error::uri(raw, format!("invalid scheme {scheme:?}")));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.strip_prefix("//") {
            Some(after) => match after.find('/') {
                Some(i) => (Some(after[..i].to_string()), after[i..].to_string()),
                None => (Some(after.to_string()), String::new()),
            },
            None => (None, before_query.to_string()),
        };
        let mut params: Vec<(String, String)> = Vec::new();
        if let Some(query) = query {
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                if name.is_empty() {
                    return Err(Error::uri(raw, "empty parameter name in the query"));
                }
                if params.iter().any(|(n, _)| *n == name) {
                    return Err(Error::uri(
                        raw,
                        format!("parameter {name:?} is given twice"),
                    ));
                }
                params.push((name.into_owned(), value.into_owned()));
            }
        }
        Ok(SinkUri {
            raw: raw.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            authority,
            path,
            params,
        })
    }

    /// The value of parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An error naming the first parameter not in `known`.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self
            .params
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            None => Ok(()),
            Some((name, _)) if known.is_empty() => Err(Error::uri(
                &self.raw,
                format!("unknown parameter {name:?}; this sink takes none"),
            )),
            Some((name, _)) => Err(Error::uri(
                &self.raw,
                format!(
                    "unknown parameter {name:?}; expected one of {}",
                    known.join(", ")
                ),
            )),
        }
    }

    /// An error if the URI has a host or path, for sinks that take neither.
    pub fn reject_path(&self, sink: &str) -> Result<()> {
        let authority = self.authority.as_deref().unwrap_or("");
        if !authority.is_empty() || !self.path.is_empty() {
            return Err(Error::uri(
                &self.raw,
                format!("the {sink} sink takes no host or path; write {sink}://"),
            ));
        }
        Ok(())
    }

    /// Parameter `name` as a positive integer, or `default` when absent.
    pub fn positive(&self, name: &str, default: usize) -> Result<usize> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::uri(
                    &self.raw,
                    format!("parameter {name}={v:?} must be a positive integer"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kafka_host_lists() {
        let u = SinkUri::parse("kafka://a:9092,b:9093/topic-1?protocol=canal-json&max-retry=3")
            .unwrap();
        assert_eq!(u.scheme, "kafka");
        assert_eq!(u.authority.as_deref(), Some("a:9092,b:9093"));
        assert_eq!(u.path, "/topic-1");
        assert_eq!(u.param("max-retry"), Some("3"));
    }

    #[test]
    fn file_forms() {
        let abs = SinkUri::parse("file:///tmp/x.jsonl").unwrap();
        assert_eq!(
            (abs.authority.as_deref(), abs.path.as_str()),
            (Some(""), "/tmp/x.jsonl")
        );
        let rel = SinkUri::parse("file:out/x.jsonl?protocol=debezium").unwrap();
        assert_eq!(
            (rel.authority.as_deref(), rel.path.as_str()),
            (None, "out/x.jsonl")
        );
        assert_eq!(rel.param("protocol"), Some("debezium"));
    }

    #[test]
    fn secrets_are_redacted_from_the_kept_uri_and_errors() {
        let u =
            SinkUri::parse("kafka://h:1/t?sasl-user=u&sasl-password=hunter2&sasl-password-file=/p")
                .unwrap();
        assert_eq!(
            u.param("sasl-password"),
            Some("hunter2"),
            "the value itself is kept"
        );
        assert!(!u.raw.contains("hunter2"), "{}", u.raw);
        assert!(
            u.raw.contains("sasl-password=[redacted]") && u.raw.contains("sasl-password-file=/p")
        );
        let e = SinkUri::parse("kafka://h:1/t?sasl-password=hunter2&sasl-password=x").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = SinkUri::parse("kafka://h:1/t?sasl%2Dpassword=hunter2&a&a").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn rejects_bad_input_naming_it() {
        let e = SinkUri::parse("no-scheme").unwrap_err();
        assert_eq!(e.code(), "CDC:ErrSinkURIInvalid");
        let e = SinkUri::parse("memory://?capacity=1&capacity=2").unwrap_err();
        assert!(e.to_string().contains("capacity"), "{e}");
        let u = SinkUri::parse("memory://?capacity=0").unwrap();
        let e = u.positive("capacity", 5).unwrap_err();
        assert!(e.to_string().contains("capacity=\"0\""), "{e}");
        let e = u.reject_unknown(&["protocol"]).unwrap_err();
        assert!(e.to_string().contains("\"capacity\""), "{e}");
    }
}
