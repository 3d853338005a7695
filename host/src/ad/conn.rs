//! One authenticated LDAP connection to AD: TLS (LDAPS or StartTLS, always verified), simple
//! bind, per-operation timeout, and reconnect when the connection broke.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::error::{AdError, AdOp};

/// How to reach and authenticate to AD.
#[derive(Clone)]
pub struct AdSettings {
    /// `ldaps://host:636` or `ldap://host:389`.
    pub url: String,
    pub bind_dn: String,
    /// Never logged: `Debug` redacts it and no error carries it.
    pub password: String,
    /// PEM file with the CA(s) to trust; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Permit `ldap://` without StartTLS (the password then crosses the wire in clear).
    pub allow_plain: bool,
    /// Connect timeout and per-operation timeout.
    pub timeout: Duration,
}

impl fmt::Debug for AdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdSettings")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("password", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("starttls", &self.starttls)
            .field("allow_plain", &self.allow_plain)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The transport security an [`AdSettings`] resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ldaps,
    StartTls,
    Plain,
}

impl AdSettings {
    /// Decides the transport, refusing combinations that would not be secure or make no sense.
    pub fn transport(&self) -> Result<Transport, AdError> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| AdError::Settings(format!("URL {:?} has no scheme", self.url)))?;
        match scheme.as_str() {
            "ldaps" if self.starttls => Err(AdError::Settings(format!(
                "{}: StartTLS applies to ldap:// URLs only; ldaps:// is already TLS",
                self.url
            ))),
            "ldaps" => Ok(Transport::Ldaps),
            "ldap" if self.starttls => Ok(Transport::StartTls),
            "ldap" if self.allow_plain => Ok(Transport::Plain),
            "ldap" => Err(AdError::Settings(format!(
                "{}: plain ldap:// without StartTLS would send the password unencrypted; \
                 use ldaps://, enable starttls, or set allow_plain explicitly",
                self.url
            ))),
            other => Err(AdError::Settings(format!(
                "{}: unsupported scheme {other:?} (expected ldaps:// or ldap://)",
                self.url
            ))),
        }
    }
}

/// An authenticated connection. Operations live in `search.rs`, `write.rs`, `schema.rs` and
/// `resolve.rs` as further `impl AdConn` blocks.
///
/// Clones share the one underlying connection (LDAP multiplexes requests), so clones can run
/// operations concurrently; `reconnect` on a clone replaces only that clone's handle.
#[derive(Clone)]
pub struct AdConn {
    ldap: Ldap,
    settings: AdSettings,
    transport: Transport,
    /// `defaultNamingContext` from the rootDSE, read on first use.
    pub(crate) domain_root: Option<String>,
}

impl fmt::Debug for AdConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdConn")
            .field("settings", &self.settings)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Installs the process-wide rustls crypto provider (aws-lc-rs) once; a provider installed
/// earlier by someone else is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, AdError> {
    let ca_err = |reason: String| AdError::CaFile {
        path: ca_file.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_err(e.to_string()))?;
    for cert in iter {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ca_err(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no PEM certificate found".into()));
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl AdConn {
    /// Connects, sets up TLS as the settings say and binds.
    pub async fn connect(settings: &AdSettings) -> Result<AdConn, AdError> {
        let transport = settings.transport()?;
        let ldap = open(settings, transport).await?;
        Ok(AdConn {
            ldap,
            settings: settings.clone(),
            transport,
            domain_root: None,
        })
    }

    pub fn settings(&self) -> &AdSettings {
        &self.settings
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// True when the connection's driver has ended (server closed it, I/O error).
    pub fn is_closed(&mut self) -> bool {
        self.ldap.is_closed()
    }

    /// Opens a fresh connection with the same settings and binds again.
    pub async fn reconnect(&mut self) -> Result<(), AdError> {
        let ldap = open(&self.settings, self.transport).await?;
        let mut old = std::mem::replace(&mut self.ldap, ldap);
        // best effort: the old connection is probably gone already
        let _ = old.unbind().await;
        Ok(())
    }

    /// Reconnects if the connection is known to be closed; cheap otherwise.
    pub async fn ensure_connected(&mut self) -> Result<(), AdError> {
        if self.is_closed() {
            tracing::info!(url = %self.settings.url, "AD connection closed; reconnecting");
            self.reconnect().await?;
        }
        Ok(())
    }

    /// Unbinds and closes.
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }

    /// The handle for the next operation, with the configured timeout armed. A connection
    /// known to be closed is replaced first; an operation that fails mid-flight is not retried
    /// (the caller decides, since a write may or may not have happened).
    pub(crate) async fn ldap(&mut self) -> Result<&mut Ldap, AdError> {
        self.ensure_connected().await?;
        self.ldap.with_timeout(self.settings.timeout);
        Ok(&mut self.ldap)
    }
}

async fn open(settings: &AdSettings, transport: Transport) -> Result<Ldap, AdError> {
    install_crypto_provider();
    let connect_err = |message: String| AdError::Connect {
        url: settings.url.clone(),
        message,
    };
    let mut ls = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(transport == Transport::StartTls);
    if transport != Transport::Plain {
        if let Some(ca) = &settings.ca_file {
            ls = ls.set_config(tls_config(ca)?);
        }
        // no CA file: ldap3's default config, verified against the system roots
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(ls, &settings.url)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    ldap3::drive!(conn);
    let res = ldap
        .with_timeout(settings.timeout)
        .simple_bind(&settings.bind_dn, &settings.password)
        .await
        .map_err(|e| AdError::from_ldap(AdOp::Bind, &settings.bind_dn, e))?;
    if res.rc != 0 {
        return Err(AdError::Bind {
            bind_dn: settings.bind_dn.clone(),
            rc: res.rc,
            message: res.text,
        });
    }
    Ok(ldap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, starttls: bool, allow_plain: bool) -> AdSettings {
        AdSettings {
            url: url.into(),
            bind_dn: "CN=Administrator,CN=Users,DC=corp".into(),
            password: "s3cret-Passw0rd".into(),
            ca_file: None,
            starttls,
            allow_plain,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn debug_redacts_password() {
        let s = settings("ldaps://127.0.0.1", false, false);
        let d = format!("{s:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("<redacted>"));
        assert!(d.contains("CN=Administrator"));
    }

    #[test]
    fn transport_choice() {
        let t = |u, st, p| settings(u, st, p).transport();
        assert_eq!(
            t("ldaps://127.0.0.1:636", false, false).unwrap(),
            Transport::Ldaps
        );
        assert_eq!(
            t("LDAPS://127.0.0.1", false, true).unwrap(),
            Transport::Ldaps
        );
        assert_eq!(
            t("ldap://127.0.0.1", true, false).unwrap(),
            Transport::StartTls
        );
        assert_eq!(
            t("ldap://127.0.0.1", false, true).unwrap(),
            Transport::Plain
        );
        let e = t("ldap://127.0.0.1", false, false).unwrap_err().to_string();
        assert!(e.contains("allow_plain"), "{e}");
        assert!(t("ldaps://127.0.0.1", true, false).is_err());
        assert!(t("http://127.0.0.1", false, true).is_err());
        assert!(t("127.0.0.1", false, true).is_err());
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = tls_config(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
