//! Errors of the AD connector. Every variant names what was being done and to which DN, and
//! carries AD's own result code and message when the server answered. When an underlying error
//! is at hand (ldap3, I/O, rustls, DNS) it is the variant's `source()` and is also quoted in
//! the message, as the state store's errors do: the many callers that log or record `{e}`
//! keep the cause, and the binary prints each cause of a chain once.

use std::fmt;
use std::path::PathBuf;

use hickory_resolver::net::NetError;

/// The LDAP operation an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdOp {
    Connect,
    Bind,
    Search,
    Add,
    Modify,
    Rename,
    Delete,
}

impl fmt::Display for AdOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdOp::Connect => "connect",
            AdOp::Bind => "bind",
            AdOp::Search => "search",
            AdOp::Add => "add",
            AdOp::Modify => "modify",
            AdOp::Rename => "rename",
            AdOp::Delete => "delete",
        })
    }
}

/// A malformed DN, SID or GUID (pure parsing, no server involved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("invalid DN {dn:?}: {reason}")]
    Dn { dn: String, reason: String },
    #[error("invalid SID {sid:?}: {reason}")]
    Sid { sid: String, reason: String },
    #[error("invalid GUID bytes: {reason}")]
    Guid { reason: String },
}

/// Errors of the AD connector.
#[derive(Debug, thiserror::Error)]
pub enum AdError {
    /// This process may not write now (it is not the writer among instances sharing a state).
    #[error("not written: {0}")]
    NotWriter(String),

    /// The settings cannot work (e.g. plain ldap:// without `allow_plain`).
    #[error("invalid AD connection settings: {0}")]
    Settings(String),

    /// The CA file for TLS verification could not be read or holds no usable certificate.
    #[error("cannot use CA file {path}: {cause}")]
    CaFile {
        path: PathBuf,
        #[source]
        cause: CaFileError,
    },

    /// TCP/TLS connection or StartTLS failed.
    #[error("cannot connect to {url}: {cause}")]
    Connect {
        url: String,
        #[source]
        cause: ConnectError,
    },

    /// The Kerberos side of a GSSAPI bind failed (keytab, KDC, service ticket). Never carries
    /// a key.
    #[error("Kerberos bind as {principal}: {message}")]
    Kerberos { principal: String, message: String },

    /// The domain's DCs could not be found in DNS (`ad.discover`). Boxed: hickory's errors
    /// are large.
    #[error("domain controllers of {domain} not found in DNS: {cause}")]
    Discovery {
        domain: String,
        #[source]
        cause: Box<DiscoveryError>,
    },

    /// Several domain controllers were tried and none could be used.
    #[error("no domain controller could be used: {failures}")]
    NoDomainController { failures: String },

    /// The simple bind was refused. Never carries the password.
    #[error("bind as {bind_dn:?} failed: rc={rc} ({}): {message}", rc_name(*rc))]
    Bind {
        bind_dn: String,
        rc: u32,
        message: String,
    },

    /// The server answered an operation with a non-success result code.
    #[error("{op} {dn:?} failed: rc={rc} ({}): {message}", rc_name(*rc))]
    Ldap {
        op: AdOp,
        dn: String,
        rc: u32,
        message: String,
    },

    /// The operation did not get an answer: I/O error, timeout, closed channel (ldap3's error
    /// is the source; boxed, it is larger than the other variants).
    #[error("{op} {dn:?}: {cause}")]
    NoAnswer {
        op: AdOp,
        dn: String,
        #[source]
        cause: Box<ldap3::LdapError>,
    },

    /// As [`AdError::NoAnswer`], described in words where no ldap3 error is at hand.
    #[error("{op} {dn:?}: {message}")]
    Transport {
        op: AdOp,
        dn: String,
        message: String,
    },

    /// The server's answer could not be understood (or would have been silently truncated).
    #[error("{op} {dn:?}: unexpected response: {reason}")]
    Protocol {
        op: AdOp,
        dn: String,
        reason: String,
    },

    /// A search result entry could not be decoded (see [`EntryError`]).
    #[error("{op} {dn:?}: unexpected response: {cause}")]
    Entry {
        op: AdOp,
        dn: String,
        #[source]
        cause: EntryError,
    },

    /// A caller-supplied argument is unusable (bad attribute name, bad DN, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error(transparent)]
    Dn(#[from] DnError),
}

impl AdError {
    /// AD's LDAP result code, when the server answered with one.
    pub fn rc(&self) -> Option<u32> {
        match self {
            AdError::Bind { rc, .. } | AdError::Ldap { rc, .. } => Some(*rc),
            _ => None,
        }
    }

    /// True when the connection is (probably) unusable and a reconnect may help.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            AdError::Transport { .. }
                | AdError::NoAnswer { .. }
                | AdError::Connect { .. }
                | AdError::NoDomainController { .. }
                | AdError::Discovery { .. }
        ) || matches!(self.rc(), Some(51 | 52 | 81))
    }

    /// Maps an ldap3 error of an operation on `dn`: server result codes become `Ldap`,
    /// everything else (I/O, timeouts, closed channels) becomes `NoAnswer`.
    pub(crate) fn from_ldap(op: AdOp, dn: &str, err: ldap3::LdapError) -> AdError {
        match err {
            ldap3::LdapError::LdapResult { result } => AdError::Ldap {
                op,
                dn: dn.to_string(),
                rc: result.rc,
                message: dc_text(&result.text),
            },
            other => AdError::NoAnswer {
                op,
                dn: dn.to_string(),
                cause: Box::new(other),
            },
        }
    }

    /// Turns a server result into `Ok(())` (rc 0) or an `Ldap` error.
    pub(crate) fn check(op: AdOp, dn: &str, res: &ldap3::LdapResult) -> Result<(), AdError> {
        if res.rc == 0 {
            Ok(())
        } else {
            Err(AdError::Ldap {
                op,
                dn: dn.to_string(),
                rc: res.rc,
                message: dc_text(&res.text),
            })
        }
    }
}

/// A DC's diagnostic message without the line break (and NUL) Active Directory and Samba end
/// it with: kept, it would split every message and log line that quotes it.
pub(crate) fn dc_text(text: &str) -> String {
    text.trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}

/// The RFC 4511 name of an LDAP result code (for messages only).
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        _ => "unknown",
    }
}

/// Why the CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// Unreadable, or not PEM.
    #[error(transparent)]
    Read(#[from] rustls_pki_types::pem::Error),
    #[error("unusable certificate: {0}")]
    Unusable(#[source] rustls::Error),
    #[error("no PEM certificate found")]
    NoCertificate,
}

/// Why connecting to a DC failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP, TLS or StartTLS, as ldap3 reports it.
    #[error(transparent)]
    Ldap(Box<ldap3::LdapError>),
    /// TCP to an address the discovery's name servers gave.
    #[error(transparent)]
    Tcp(#[from] TcpError),
    /// A Kerberos bind needs the DC's host name (for its service principal).
    #[error("no host name")]
    NoHostName,
}

/// Why a TCP connection through the discovery's name servers failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("no discovery settings")]
    NoDiscovery,
    #[error("{url}: no host:port")]
    NoHostPort { url: String },
    /// The host's addresses could not be looked up (boxed: an `AdError` holds this one).
    #[error(transparent)]
    Lookup(Box<AdError>),
    #[error("{host}: no address")]
    NoAddress { host: String },
    #[error("{addr}: {cause}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        cause: std::io::Error,
    },
    #[error("{addr}: timed out")]
    TimedOut { addr: std::net::SocketAddr },
    /// The connected socket could not be handed over to ldap3.
    #[error(transparent)]
    Detach(std::io::Error),
}

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// `/etc/resolv.conf` (or the platform's equivalent) could not be read.
    #[error("system DNS settings: {0}")]
    SystemConfig(#[source] NetError),
    #[error("DNS resolver: {0}")]
    Build(#[source] NetError),
}

/// Why the domain's DCs were not found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    #[error("SRV {name}: {cause}")]
    Srv {
        name: String,
        #[source]
        cause: NetError,
    },
    #[error("SRV {name}: no domain controller listed")]
    NoneListed { name: String },
    /// Every host DNS listed is outside the domains DCs may be in (see [`trusted`]).
    #[error("SRV {name}: every host listed ({}) is outside {domain} and ad.discover_allowed_domains; none is contacted", hosts.join(", "))]
    AllOutside {
        name: String,
        hosts: Vec<String>,
        domain: String,
    },
    #[error("address of {host}: {cause}")]
    Address {
        host: String,
        #[source]
        cause: NetError,
    },
}

/// Why a search result entry, or an attribute description in it, could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("malformed range option in {desc:?}")]
    RangeOption { desc: String },
    #[error("malformed range start in {desc:?}")]
    RangeStart { desc: String },
    #[error("malformed range end in {desc:?}")]
    RangeEnd { desc: String },
    #[error("range end before start in {desc:?}")]
    RangeOrder { desc: String },
    #[error("{desc:?}: first range does not start at 0")]
    FirstRange { desc: String },
    #[error("{desc:?} carries {got} values, expected {expected}")]
    RangeCount {
        desc: String,
        got: usize,
        expected: usize,
    },
    /// The BER structure is not a SearchResultEntry; names the part that is wrong.
    #[error("malformed search result entry: {0}")]
    Malformed(&'static str),
    /// objectGUID or objectSid bytes.
    #[error(transparent)]
    Id(#[from] DnError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_error_names_dn_and_message() {
        let e = AdError::Bind {
            bind_dn: "CN=Administrator,CN=Users,DC=corp".into(),
            rc: 49,
            message: "80090308: LdapErr: data 52e".into(),
        };
        let s = e.to_string();
        assert!(s.contains("CN=Administrator,CN=Users,DC=corp"), "{s}");
        assert!(s.contains("rc=49 (invalidCredentials)"), "{s}");
        assert!(s.contains("data 52e"), "{s}");
        assert_eq!(e.rc(), Some(49));
    }

    #[test]
    fn ldap_result_maps_to_ldap_variant() {
        let res = ldap3::LdapResult {
            rc: 68,
            matched: String::new(),
            // As a DC sends it: with a trailing line break.
            text: "already exists\n\0".into(),
            refs: vec![],
            ctrls: vec![],
        };
        let e = AdError::from_ldap(AdOp::Add, "CN=x", ldap3::LdapError::from(res));
        assert_eq!(e.rc(), Some(68));
        assert!(!e.is_connection_error());
        assert_eq!(
            e.to_string(),
            "add \"CN=x\" failed: rc=68 (entryAlreadyExists): already exists"
        );
        let t = AdError::from_ldap(AdOp::Search, "CN=x", ldap3::LdapError::EndOfStream);
        assert!(t.is_connection_error());
    }

    #[test]
    fn a_transport_error_keeps_ldap3s_error_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = AdError::from_ldap(AdOp::Modify, "CN=g", ldap3::LdapError::from(io));
        assert!(e.is_connection_error());
        assert_eq!(e.rc(), None);
        assert_eq!(e.to_string(), "modify \"CN=g\": I/O error: reset by peer");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("I/O error: reset by peer"));
    }
}
