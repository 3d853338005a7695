//! One authenticated LDAP connection to AD: TLS (LDAPS or StartTLS, always verified), simple
//! bind, per-operation timeout, and reconnect when the connection broke, moving on to the next
//! domain controller when there are several.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use secrecy::ExposeSecret;

use super::discover::{self, Discovery};
use super::error::{AdError, AdOp, CaFileError, ConnectError, TcpError};
use super::failover::{DcList, Start};
use super::kerberos::{self, Kerberos};

/// How to reach and authenticate to AD. `Debug` shows the password as redacted (a
/// `SecretString`).
#[derive(Clone, Debug)]
pub struct AdSettings {
    /// The domain controllers in order of preference, each `ldaps://host:636` or
    /// `ldap://host:389`; at least one, unless `discover` finds them.
    pub urls: Vec<String>,
    /// Find the DCs in DNS (SRV records) at each (re)connection, instead of `urls`.
    pub discover: Option<Discovery>,
    pub bind_dn: String,
    /// Never logged: `Debug` redacts it and no error carries it.
    pub password: secrecy::SecretString,
    /// Bind with Kerberos (a keytab) instead of `bind_dn` and `password`.
    pub kerberos: Option<Kerberos>,
    /// PEM file with the CA(s) to trust; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Permit `ldap://` without StartTLS (the password then crosses the wire in clear).
    pub allow_plain: bool,
    /// Connect timeout and per-operation timeout.
    pub timeout: Duration,
}

/// The transport security an [`AdSettings`] resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ldaps,
    StartTls,
    Plain,
}

impl AdSettings {
    /// Decides the transport of every URL, refusing combinations that would not be secure or
    /// make no sense; returns the first URL's.
    pub fn transport(&self) -> Result<Transport, AdError> {
        let mut first = None;
        for url in &self.urls {
            let t = self.transport_of(url)?;
            first.get_or_insert(t);
        }
        first.ok_or_else(|| AdError::Settings("no domain controller URL given".into()))
    }

    fn transport_of(&self, url: &str) -> Result<Transport, AdError> {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| AdError::Settings(format!("URL {url:?} has no scheme")))?;
        match scheme.as_str() {
            "ldaps" if self.starttls => Err(AdError::Settings(format!(
                "{url}: StartTLS applies to ldap:// URLs only; ldaps:// is already TLS"
            ))),
            "ldaps" => Ok(Transport::Ldaps),
            "ldap" if self.starttls => Ok(Transport::StartTls),
            "ldap" if self.allow_plain => Ok(Transport::Plain),
            "ldap" => Err(AdError::Settings(format!(
                "{url}: plain ldap:// without StartTLS would send the password unencrypted; \
                 use ldaps://, enable starttls, or set allow_plain explicitly"
            ))),
            other => Err(AdError::Settings(format!(
                "{url}: unsupported scheme {other:?} (expected ldaps:// or ldap://)"
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
    /// The DCs and the one this connection is to.
    dcs: DcList,
    /// The transport of the DC in use.
    transport: Transport,
    /// With `discover`: asks DNS for the DCs and their addresses.
    resolver: Option<hickory_resolver::TokioResolver>,
    /// `defaultNamingContext` from the rootDSE, read on first use.
    pub(crate) domain_root: Option<String>,
    /// Asked before every write (see [`WriteGuard`]); clones share it.
    write_guard: Option<WriteGuard>,
}

/// Says whether this process may write to AD now: `Err(why)` stops the write before it is
/// sent. An instance sharing its state with others (`crate::ha`) writes only while it holds
/// the lease, checked here per write so a lease lost mid-batch stops the batch.
pub type WriteGuard = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl fmt::Debug for AdConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdConn")
            .field("settings", &self.settings)
            .field("url", &self.dcs.current())
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
    let ca_err = |cause: CaFileError| AdError::CaFile {
        path: ca_file.to_path_buf(),
        cause,
    };
    let mut roots = rustls::RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_err(e.into()))?;
    for cert in iter {
        let cert = cert.map_err(|e| ca_err(e.into()))?;
        roots
            .add(cert)
            .map_err(|e| ca_err(CaFileError::Unusable(e)))?;
    }
    if roots.is_empty() {
        return Err(ca_err(CaFileError::NoCertificate));
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl AdConn {
    /// Connects to the first DC that answers, sets up TLS as the settings say and binds.
    pub async fn connect(settings: &AdSettings) -> Result<AdConn, AdError> {
        let (mut dcs, resolver) = match &settings.discover {
            None => {
                settings.transport()?;
                (DcList::new(settings.urls.clone()), None)
            }
            Some(d) => {
                let resolver = discover::resolver(d, settings.timeout)?;
                let urls = discovered_urls(settings, d, &resolver).await?;
                (DcList::new(urls), Some(resolver))
            }
        };
        let (ldap, transport) = open_any(
            settings,
            resolver.as_ref(),
            &mut dcs,
            Start::Preferred,
            None,
        )
        .await?;
        Ok(AdConn {
            ldap,
            settings: settings.clone(),
            dcs,
            transport,
            resolver,
            domain_root: None,
            write_guard: None,
        })
    }

    /// The URL of the DC this connection is to.
    pub fn url(&self) -> &str {
        self.dcs.current().unwrap_or_default()
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

    /// Opens a fresh connection with the same settings and binds again: to the next DC when
    /// there are several (this one is tried last), since this one is presumed broken.
    pub async fn reconnect(&mut self) -> Result<(), AdError> {
        self.reconnect_because("reconnect asked for").await
    }

    async fn reconnect_because(&mut self, reason: &str) -> Result<(), AdError> {
        if let (Some(d), Some(r)) = (&self.settings.discover, &self.resolver) {
            // DCs come and go: ask DNS again, keeping the DC in use if it is still listed.
            match discovered_urls(&self.settings, d, r).await {
                Ok(urls) => self.dcs.replace(urls),
                Err(e) => tracing::warn!("{e}; trying the domain controllers found before"),
            }
        }
        let (ldap, transport) = open_any(
            &self.settings,
            self.resolver.as_ref(),
            &mut self.dcs,
            Start::AfterCurrent,
            Some(reason),
        )
        .await?;
        self.transport = transport;
        let mut old = std::mem::replace(&mut self.ldap, ldap);
        // best effort: the old connection is probably gone already
        let _ = old.unbind().await;
        Ok(())
    }

    /// Reconnects if the connection is known to be closed; cheap otherwise.
    pub async fn ensure_connected(&mut self) -> Result<(), AdError> {
        if self.is_closed() {
            tracing::info!(url = %self.url(), "AD connection closed; reconnecting");
            self.reconnect_because("the connection was closed").await?;
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

    /// [`Self::ldap`] for a write: refused when the write guard says no.
    pub(crate) async fn writer(&mut self) -> Result<&mut Ldap, AdError> {
        if let Some(guard) = &self.write_guard {
            guard().map_err(AdError::NotWriter)?;
        }
        self.ldap().await
    }

    /// Sets the check run before every write of this connection and of its clones made
    /// afterwards (`None`: writes are not checked).
    pub fn set_write_guard(&mut self, guard: Option<WriteGuard>) {
        self.write_guard = guard;
    }
}

/// Tries the DCs in the order `start` gives and settles on the first that binds. A failure
/// that another DC cannot cure (refused credentials, an unusable CA file) ends the walk at
/// once: trying a wrong password on every DC would only lock the account out sooner.
async fn open_any(
    settings: &AdSettings,
    resolver: Option<&hickory_resolver::TokioResolver>,
    dcs: &mut DcList,
    start: Start,
    reason: Option<&str>,
) -> Result<(Ldap, Transport), AdError> {
    let previous = dcs.current().unwrap_or_default().to_string();
    let mut failures: Vec<(String, AdError)> = Vec::new();
    for i in dcs.attempts(start) {
        let Some(url) = dcs.urls().get(i).cloned() else {
            continue;
        };
        let transport = settings.transport_of(&url)?;
        match open(settings, resolver, &url, transport).await {
            Ok(ldap) => {
                if dcs.settle(i) {
                    let why = match (failures.is_empty(), reason) {
                        (true, Some(r)) => format!("{previous}: {r}"),
                        _ => failure_summary(&failures),
                    };
                    tracing::warn!(url = %url, previous = %previous, reason = %why, "switched to another domain controller");
                }
                return Ok((ldap, transport));
            }
            Err(e) if e.is_connection_error() && dcs.urls().len() > 1 => failures.push((url, e)),
            Err(e) => return Err(e),
        }
    }
    if failures.len() == 1 {
        if let Some((_, e)) = failures.pop() {
            return Err(e);
        }
    }
    Err(AdError::NoDomainController {
        failures: failure_summary(&failures),
    })
}

fn failure_summary(failures: &[(String, AdError)]) -> String {
    failures
        .iter()
        .map(|(url, e)| format!("{url}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The DCs DNS lists for the domain, as URLs, in RFC 2782 order.
async fn discovered_urls(
    settings: &AdSettings,
    d: &Discovery,
    resolver: &hickory_resolver::TokioResolver,
) -> Result<Vec<String>, AdError> {
    let ldaps = !(settings.starttls || settings.allow_plain);
    let urls: Vec<String> = discover::lookup(d, resolver)
        .await?
        .iter()
        .map(|t| discover::url_for(t, ldaps))
        .collect();
    for url in &urls {
        settings.transport_of(url)?;
    }
    tracing::info!(domain = %d.domain, dcs = ?urls, "domain controllers found in DNS");
    Ok(urls)
}

/// A TCP connection to `url`'s host, its address asked of the discovery's name servers (the
/// host names DNS gave need not be in the system's resolver).
async fn tcp_via(
    settings: &AdSettings,
    resolver: &hickory_resolver::TokioResolver,
    url: &str,
) -> Result<std::net::TcpStream, TcpError> {
    let Some(d) = &settings.discover else {
        return Err(TcpError::NoDiscovery);
    };
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| TcpError::NoHostPort {
            url: url.to_string(),
        })?;
    let ips = discover::addresses(d, resolver, host)
        .await
        .map_err(|e| TcpError::Lookup(Box::new(e)))?;
    let mut last = TcpError::NoAddress {
        host: host.to_string(),
    };
    for ip in ips {
        let addr = std::net::SocketAddr::new(ip, port);
        match tokio::time::timeout(settings.timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return stream.into_std().map_err(TcpError::Detach),
            Ok(Err(cause)) => last = TcpError::Connect { addr, cause },
            Err(_) => last = TcpError::TimedOut { addr },
        }
    }
    Err(last)
}

async fn open(
    settings: &AdSettings,
    resolver: Option<&hickory_resolver::TokioResolver>,
    url: &str,
    transport: Transport,
) -> Result<Ldap, AdError> {
    install_crypto_provider();
    let connect_err = |cause: ConnectError| AdError::Connect {
        url: url.to_string(),
        cause,
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
    if let Some(r) = resolver {
        // The URL keeps the host name (TLS checks the certificate against it).
        ls = ls.set_std_stream(ldap3::StdStream::Tcp(
            tcp_via(settings, r, url)
                .await
                .map_err(|e| connect_err(e.into()))?,
        ));
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(ls, url)
        .await
        .map_err(|e| connect_err(ConnectError::Ldap(Box::new(e))))?;
    ldap3::drive!(conn);
    if let Some(k) = &settings.kerberos {
        let host = kerberos::spn_host(url).ok_or_else(|| connect_err(ConnectError::NoHostName))?;
        #[cfg(feature = "kerberos")]
        {
            kerberos::bind(&mut ldap, k, host).await?;
            return Ok(ldap);
        }
        #[cfg(not(feature = "kerberos"))]
        {
            let _ = (k, host);
            return Err(AdError::Settings(kerberos::HOW_TO_BUILD.into()));
        }
    }
    let res = ldap
        .with_timeout(settings.timeout)
        .simple_bind(&settings.bind_dn, settings.password.expose_secret())
        .await
        .map_err(|e| AdError::from_ldap(AdOp::Bind, &settings.bind_dn, e))?;
    if res.rc != 0 {
        return Err(AdError::Bind {
            bind_dn: settings.bind_dn.clone(),
            rc: res.rc,
            message: crate::ad::error::dc_text(&res.text),
        });
    }
    Ok(ldap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, starttls: bool, allow_plain: bool) -> AdSettings {
        AdSettings {
            urls: vec![url.into()],
            discover: None,
            bind_dn: "CN=Administrator,CN=Users,DC=corp".into(),
            password: "s3cret-Passw0rd".into(),
            kerberos: None,
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
        assert!(d.contains("REDACTED"), "{d}");
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
        let err = tls_config(&missing).unwrap_err();
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
        let e = err.to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
