//! How a [`Client`](crate::Client) is configured: [`ClientConfig`], the one
//! way to build one, and the PEM material for mutual TLS and extra roots.
//!
//! Private keys and the API key are never printed: `Debug` shows file names
//! or byte counts only.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::error::PortalError;

/// Default request timeout (the seed's `timeout: 30`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default page size for lists and package size for submissions (the seed's
/// `task_package_size: 20`).
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Where PEM text comes from: a file (read when the client is built, so a
/// missing file fails fast with its path) or bytes in memory.
pub enum Pem {
    File(PathBuf),
    Inline(SecretBox<[u8]>),
}

impl Pem {
    pub fn file(path: impl Into<PathBuf>) -> Pem {
        Pem::File(path.into())
    }

    pub fn inline(bytes: impl Into<Vec<u8>>) -> Pem {
        Pem::Inline(SecretBox::new(bytes.into().into_boxed_slice()))
    }

    pub(crate) fn read(&self, what: &str) -> Result<Vec<u8>, PortalError> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| PortalError::config(format!("{what} file {}", path.display()), e)),
            Pem::Inline(bytes) => Ok(bytes.expose_secret().to_vec()),
        }
    }
}

impl Clone for Pem {
    fn clone(&self) -> Pem {
        match self {
            Pem::File(p) => Pem::File(p.clone()),
            Pem::Inline(b) => Pem::inline(b.expose_secret().to_vec()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "Pem::File({})", p.display()),
            Pem::Inline(b) => write!(f, "Pem::Inline({} bytes)", b.expose_secret().len()),
        }
    }
}

/// The client certificate for mutual TLS, as the settings allow it: one PEM
/// holding the certificate chain and the private key, or `[cert, key]`.
#[derive(Clone, Debug)]
pub enum ClientIdentity {
    Combined(Pem),
    Split { cert: Pem, key: Pem },
}

/// Everything a [`Client`](crate::Client) needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// `http(s)://…`; a trailing `/` is dropped, endpoints are appended.
    pub base_url: String,
    /// Sent as `X-Portal-API-Key` on every request.
    pub api_key: SecretString,
    /// Per request, connect to last body byte.
    pub timeout: Duration,
    /// `limit` of each list page, and tasks (or consents) per package.
    pub page_size: usize,
    pub client_identity: Option<ClientIdentity>,
    /// Extra trusted roots, added to the system's.
    pub ca_bundle: Option<Pem>,
}

impl ClientConfig {
    /// A configuration with the seed's defaults (30 s, 20 per page).
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            timeout: DEFAULT_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
            client_identity: None,
            ca_bundle: None,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.timeout = timeout;
        self
    }

    pub fn with_page_size(mut self, page_size: usize) -> ClientConfig {
        self.page_size = page_size;
        self
    }

    pub fn with_client_identity(mut self, identity: ClientIdentity) -> ClientConfig {
        self.client_identity = Some(identity);
        self
    }

    pub fn with_ca_bundle(mut self, bundle: Pem) -> ClientConfig {
        self.ca_bundle = Some(bundle);
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .field("client_identity", &self.client_identity)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

/// The URL without user or password (they may be credentials).
pub(crate) fn redacted_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => text.to_owned(),
        Err(_) if text.contains('@') => "(unparsable, may hold credentials)".to_owned(),
        Err(_) => text.to_owned(),
    }
}

/// The settings file's `portal_client` block, as loaded by
/// `task_model::settings`; build the client with
/// `Client::new(ClientConfig::from(&settings.portal_client))`.
impl From<&task_model::settings::PortalClientSettings> for ClientConfig {
    fn from(s: &task_model::settings::PortalClientSettings) -> ClientConfig {
        use task_model::settings::ClientCertificate;
        ClientConfig {
            base_url: s.url.expose().to_owned(),
            api_key: s.api_key.clone(),
            timeout: s.timeout,
            page_size: s.task_package_size,
            client_identity: s.client_certificate.as_ref().map(|c| match c {
                ClientCertificate::Combined(pem) => ClientIdentity::Combined(Pem::file(pem)),
                ClientCertificate::Split { cert, key } => ClientIdentity::Split {
                    cert: Pem::file(cert),
                    key: Pem::file(key),
                },
            }),
            ca_bundle: s.ca_bundle.as_ref().map(Pem::file),
        }
    }
}
