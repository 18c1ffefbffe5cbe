//! [`SecretUrl`]: a URL that may hold a password (Redis, PostgreSQL, a portal
//! URL with user info). The whole URL is kept as a secret; `Debug` and
//! `Display` show it with the password replaced by `***`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

const MASK: &str = "***";

/// A URL whose password never reaches `Debug`, `Display` or errors.
#[derive(Clone)]
pub struct SecretUrl {
    full: SecretString,
    redacted: String,
    scheme: String,
}

impl SecretUrl {
    /// Parses `text` as a URL (any scheme). The error never repeats the text.
    pub fn parse(text: &str) -> Result<SecretUrl, url::ParseError> {
        let url = url::Url::parse(text)?;
        let scheme = url.scheme().to_owned();
        let redacted = redact(url).unwrap_or_else(|| text.to_owned());
        Ok(SecretUrl {
            full: SecretString::from(text.to_owned()),
            redacted,
            scheme,
        })
    }

    /// The URL as written, password included: hand it to the client library
    /// only.
    pub fn expose(&self) -> &str {
        self.full.expose_secret()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }
}

/// The redacted form, or `None` when there is nothing to hide (then the text
/// is shown exactly as written).
fn redact(mut url: url::Url) -> Option<String> {
    let mut changed = false;
    if url.password().is_some() {
        // Cannot fail for a URL that already has a password (it has a host).
        changed = url.set_password(Some(MASK)).is_ok();
    }
    if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    changed.then(|| url.to_string())
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "password" || key == "pass" || key == "sslpassword"
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl PartialEq for SecretUrl {
    fn eq(&self, other: &SecretUrl) -> bool {
        self.expose() == other.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_masked_in_debug_and_display() {
        let u = SecretUrl::parse("postgres://app:s3cret@db.example.org:5432/sync").expect("url");
        assert_eq!(u.redacted(), "postgres://app:***@db.example.org:5432/sync");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(!u.to_string().contains("s3cret"));
        assert_eq!(u.expose(), "postgres://app:s3cret@db.example.org:5432/sync");
        assert_eq!(u.scheme(), "postgres");
    }

    #[test]
    fn password_query_parameter_is_masked() {
        let u = SecretUrl::parse("postgres://db/sync?user=app&password=s3cret").expect("url");
        assert!(!u.redacted().contains("s3cret"), "{}", u.redacted());
        assert!(u.redacted().contains("user=app"));
    }

    #[test]
    fn redis_password_only_is_masked() {
        let u = SecretUrl::parse("redis://:hunter2@127.0.0.1:6379/0").expect("url");
        assert!(!u.redacted().contains("hunter2"), "{}", u.redacted());
    }

    #[test]
    fn url_without_password_is_shown_as_written() {
        let u = SecretUrl::parse("sqlite://portal-sync.db").expect("url");
        assert_eq!(u.redacted(), "sqlite://portal-sync.db");
        assert_eq!(u.to_string(), "sqlite://portal-sync.db");
    }
}
