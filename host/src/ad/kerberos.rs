//! The Kerberos bind (SASL GSSAPI) with a keytab, instead of a password: the service account's
//! keys come from the keytab, the DC is asked for as `ldap/<host of its URL>`.
//!
//! Built only with the `kerberos` cargo feature: GSSAPI comes from the system's MIT Kerberos
//! (libgssapi), whose bindings need clang and libkrb5-dev at build time. Without the feature
//! the config refuses `auth = "kerberos"` and says how to build it.

use std::path::PathBuf;

/// A keytab and the principal to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kerberos {
    /// `svc-writeback@CORP.EXAMPLE.COM`.
    pub principal: String,
    /// A keytab holding the principal's keys (`samba-tool domain exportkeytab`, `ktpass`).
    pub keytab: PathBuf,
}

/// Whether this binary can bind with Kerberos.
pub const BUILT_IN: bool = cfg!(feature = "kerberos");

/// How to get a binary that can.
pub const HOW_TO_BUILD: &str = "this writeback was built without Kerberos: build it with `cargo build --features kerberos` (needs clang, libclang-dev and libkrb5-dev)";

/// The host name of an `ldap[s]://host[:port]` URL: the DC's SPN is `ldap/<host>`.
pub fn spn_host(url: &str) -> Option<&str> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let host = if authority.starts_with('[') {
        authority.find(']').and_then(|i| authority.get(..=i))?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(feature = "kerberos")]
mod gss {
    use std::sync::Mutex;

    use cross_krb5::{Cred, InitiateFlags, K5Cred};
    use ldap3::Ldap;

    use super::Kerberos;
    use crate::ad::error::{AdError, AdOp};

    /// The keytab MIT Kerberos was pointed at (once per process).
    static KEYTAB: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

    /// MIT Kerberos takes a client keytab from the environment only (the cred-store API is not
    /// exposed by the bindings). The ticket cache is kept in memory, so no ticket is written
    /// to disk and the host's own cache (the admin's tickets) is left alone. The binary calls
    /// this before its runtime starts ([`super::prepare_env`]); a bind that finds it done does
    /// not touch the environment again.
    pub(super) fn use_keytab(k: &Kerberos) -> Result<(), AdError> {
        let mut set = KEYTAB.lock().map_err(|_| AdError::Kerberos {
            principal: k.principal.clone(),
            message: "keytab lock poisoned".into(),
        })?;
        if set.as_deref() == Some(k.keytab.as_path()) {
            return Ok(());
        }
        std::fs::File::open(&k.keytab).map_err(|e| AdError::Kerberos {
            principal: k.principal.clone(),
            message: format!("keytab {}: {e}", k.keytab.display()),
        })?;
        std::env::set_var("KRB5_CLIENT_KTNAME", format!("FILE:{}", k.keytab.display()));
        std::env::set_var("KRB5CCNAME", "MEMORY:writeback");
        *set = Some(k.keytab.clone());
        Ok(())
    }

    /// Binds `ldap` with the keytab's key for `k.principal`, asking for `ldap/<host>`. Over
    /// TLS ldap3 sends the TLS channel binding and no SASL security layer; over plain LDAP it
    /// negotiates the confidentiality (sealing) layer. The GSSAPI calls block (keytab, KDC):
    /// a bind is once per connection.
    pub(crate) async fn bind(ldap: &mut Ldap, k: &Kerberos, host: &str) -> Result<(), AdError> {
        use_keytab(k)?;
        let err = |message: String| AdError::Kerberos {
            principal: k.principal.clone(),
            message,
        };
        let cred = Cred::client_acquire(InitiateFlags::empty(), Some(&k.principal))
            .map_err(|e| err(format!("credentials from the keytab: {e:#}")))?;
        let res = ldap
            .sasl_gssapi_cred_bind(cred, host)
            .await
            .map_err(|e| match e {
                ldap3::LdapError::GssapiOperationError(m) => err(format!("ldap/{host}: {m}")),
                other => AdError::from_ldap(AdOp::Bind, &k.principal, other),
            })?;
        if res.rc != 0 {
            return Err(AdError::Bind {
                bind_dn: k.principal.clone(),
                rc: res.rc,
                message: res.text,
            });
        }
        Ok(())
    }
}

#[cfg(feature = "kerberos")]
pub(crate) use gss::bind;

/// Points MIT Kerberos at `k`'s keytab through the process environment. Changing the
/// environment races with any thread reading it, so the binary calls this before its runtime
/// starts. Without the `kerberos` feature there is nothing to prepare.
pub fn prepare_env(k: &Kerberos) -> Result<(), super::AdError> {
    #[cfg(feature = "kerberos")]
    gss::use_keytab(k)?;
    #[cfg(not(feature = "kerberos"))]
    let _ = k;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spn_host_is_the_urls_host() {
        assert_eq!(
            spn_host("ldaps://dc1.corp.example.test:636"),
            Some("dc1.corp.example.test")
        );
        assert_eq!(spn_host("ldap://dc2.corp"), Some("dc2.corp"));
        assert_eq!(spn_host("ldaps://dc1.corp/"), Some("dc1.corp"));
        assert_eq!(spn_host("ldaps://[::1]:636"), Some("[::1]"));
        assert_eq!(spn_host("ldaps://"), None);
        assert_eq!(spn_host("dc1"), None);
    }
}
