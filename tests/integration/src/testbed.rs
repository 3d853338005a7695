//! Settings of the running Samba AD test bed (`tests/testbed/samba-ad.sh up`) and LDAP helpers
//! shared by the integration tests. Forest A (`CORP.EXAMPLE.TEST`, [`AdTestbed::load`]) is the
//! one every test uses; forest B (`FABRIKAM.EXAMPLE.TEST`, [`AdTestbed::forest_b`], started with
//! `samba-ad.sh --forest b up`) is a second, independent forest for multi-forest tests, which
//! may also stop and start its DC ([`AdTestbed::stop_dc`]).
//!
//! The helpers panic with a clear message instead of returning errors: they are test set-up and
//! tear-down, where a failure must stop the test loudly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The message every test that needs Samba fails with when the test bed is not up.
pub const NOT_RUNNING: &str =
    "Samba AD test bed is not running: run `tests/testbed/samba-ad.sh up` or `make test`";

/// Environment variable naming the settings file (default `<workspace>/.testbed/samba.env`).
pub const ENV_FILE_VAR: &str = "WRITEBACK_TESTBED_ENV";

/// The message every test that needs forest B fails with when it is not up.
pub const NOT_RUNNING_B: &str = "Samba AD forest B (FABRIKAM.EXAMPLE.TEST) is not running: \
     run `sudo tests/testbed/samba-ad.sh --forest b up` and point WRITEBACK_TESTBED_B_ENV at the \
     settings file it prints (`<repo>/.testbed/forest-b/samba.env`), or run `make test`";

/// Environment variable naming forest B's settings file (default
/// `<workspace>/.testbed/forest-b/samba.env`).
pub const ENV_FILE_B_VAR: &str = "WRITEBACK_TESTBED_B_ENV";

/// The test bed's script, which starts and stops the DCs.
const SCRIPT: &str = "../../tests/testbed/samba-ad.sh";

/// LDAP result code noSuchObject.
const NO_SUCH_OBJECT: u32 = 32;

/// Concurrent delete requests per tree level in [`delete_subtree`].
const DELETE_WORKERS: usize = 4;

/// Connection settings of the running test bed, as written by `samba-ad.sh up`.
#[derive(Clone, Debug)]
pub struct AdTestbed {
    /// `ldap://127.0.0.1:389` (plain; StartTLS available).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:636`.
    pub ldaps_url: String,
    /// `DC=corp,DC=example,DC=test`.
    pub base_dn: String,
    /// The domain administrator's DN: the tests' own set-up and checks bind as this.
    pub bind_dn: String,
    pub bind_password: String,
    /// Writeback's service account (`svc-writeback`, in no group but Domain Users): the
    /// `writeback` binary under test binds as this, with only the rights [`Self::delegate`]
    /// grants on each managed OU.
    pub service_account: String,
    pub service_dn: String,
    pub service_password: String,
    /// The running instance's directory (`private/sam.ldb`, `etc/smb.conf`).
    pub instance_dir: PathBuf,
    /// PEM file of the test bed's own CA, which signed the DC's certificate.
    pub ca_file: PathBuf,
    /// `CORP.EXAMPLE.TEST` (forest A) or `FABRIKAM.EXAMPLE.TEST` (forest B).
    pub realm: String,
    /// `a` or `b`: the `--forest` of `samba-ad.sh` that started the DC.
    pub forest: String,
    /// The loopback address the DC listens on.
    pub ip: String,
    /// The forest's state directory (template, instance, settings, PID file, log).
    pub state_dir: PathBuf,
    /// The settings file these were read from.
    pub env_file: PathBuf,
    /// The samba process, when the settings name it.
    pub pid: Option<u32>,
}

impl AdTestbed {
    /// Reads the settings file. Panics with [`NOT_RUNNING`] when the file is missing or the DC
    /// process it names is gone.
    pub fn load() -> AdTestbed {
        Self::load_from(&env_file_path(), NOT_RUNNING)
    }

    /// Forest B's settings, from `$WRITEBACK_TESTBED_B_ENV` (else
    /// `<workspace>/.testbed/forest-b/samba.env`). Panics with [`NOT_RUNNING_B`] when the file
    /// is missing or its DC is gone, and when the file is not forest B's.
    pub fn forest_b() -> AdTestbed {
        let path = env_file_b_path();
        let testbed = Self::load_from(&path, NOT_RUNNING_B);
        assert!(
            testbed.forest == "b",
            "{ENV_FILE_B_VAR} names {}, the settings of forest {} ({}), not of forest B: \
             point it at the file `sudo tests/testbed/samba-ad.sh --forest b up` prints",
            path.display(),
            testbed.forest.to_uppercase(),
            testbed.realm
        );
        testbed
    }

    /// The settings file at `path` again (after the DC was restarted: a new PID).
    pub fn reload(&self) -> AdTestbed {
        let not_running = if self.forest == "b" {
            NOT_RUNNING_B
        } else {
            NOT_RUNNING
        };
        Self::load_from(&self.env_file, not_running)
    }

    fn load_from(path: &Path, not_running: &str) -> AdTestbed {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => panic!("{not_running} (cannot read {}: {e})", path.display()),
        };
        let testbed = match parse_env(&text, path) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{not_running} ({}: {e})", path.display()),
        };
        // A DC that exited (e.g. after its maximum runtime) leaves the file behind.
        if let Some(pid) = env_value(&text, "AD_PID") {
            if Path::new("/proc/self").exists() && !Path::new("/proc").join(&pid).exists() {
                panic!(
                    "{not_running} (the DC process {pid} named in {} is gone)",
                    path.display()
                );
            }
        }
        testbed
    }

    /// Stops this forest's DC with `samba-ad.sh --forest <f> down` (by its recorded PID; the
    /// instance and its data stay). Meant for forest B: forest A is the DC every other test
    /// uses. The DC comes back with [`StoppedDc::start`], or when the returned value is dropped
    /// (also when the test panics). Panics when the script fails. Needs root, as the script
    /// does.
    #[must_use = "the DC starts again when this is dropped"]
    pub fn stop_dc(&self) -> StoppedDc {
        self.run_script("down");
        StoppedDc {
            testbed: Some(self.clone()),
        }
    }

    /// Runs `samba-ad.sh --forest <f> <verb>` for this forest's state directory and address;
    /// panics with its output when it fails.
    fn run_script(&self, verb: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
        let (dir_var, ip_var) = if self.forest == "b" {
            ("WRITEBACK_TESTBED_B_DIR", "WRITEBACK_TESTBED_B_IP")
        } else {
            ("WRITEBACK_TESTBED_DIR", "WRITEBACK_TESTBED_IP")
        };
        let out = std::process::Command::new(&script)
            .arg("--forest")
            .arg(&self.forest)
            .arg(verb)
            .env(dir_var, &self.state_dir)
            .env(ip_var, &self.ip)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} --forest {} {verb} failed ({}):\n{}{}",
            script.display(),
            self.forest,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// True when the DC accepts an LDAPS connection and the administrator's bind within
    /// `timeout` (no panic: for checking that a DC is down, or up).
    pub async fn answers(&self, timeout: Duration) -> bool {
        let settings = self.conn_settings().set_conn_timeout(timeout);
        let attempt = async {
            let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.ldaps_url)
                .await
                .ok()?;
            ldap3::drive!(conn);
            let bound = ldap
                .simple_bind(&self.bind_dn, &self.bind_password)
                .await
                .and_then(|r| r.success())
                .is_ok();
            let _ = ldap.unbind().await;
            Some(bound)
        };
        matches!(
            ldap3::tokio::time::timeout(timeout, attempt).await,
            Ok(Some(true))
        )
    }

    /// The domain's SID (`S-1-5-21-...`), read from the domain root's `objectSid`.
    pub async fn domain_sid(&self) -> String {
        let mut ldap = self.connect_ldaps().await;
        let (rs, _) = ldap
            .search(
                &self.base_dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["objectSid"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot read objectSid of {}: {e}", self.base_dn));
        let _ = ldap.unbind().await;
        let entry = ldap3::SearchEntry::construct(
            rs.into_iter()
                .next()
                .unwrap_or_else(|| panic!("no entry at {}", self.base_dn)),
        );
        let raw = entry
            .bin_attrs
            .get("objectSid")
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("{} has no objectSid", self.base_dn));
        writeback::ad::dn::sid_to_string(raw)
            .unwrap_or_else(|e| panic!("objectSid of {}: {e}", self.base_dn))
    }

    /// A rustls client configuration trusting only the test bed's CA.
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        // Process-wide provider; a second install (other test, other helper) is not an error.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let pem = std::fs::read(&self.ca_file).unwrap_or_else(|e| {
            panic!(
                "{NOT_RUNNING} (cannot read CA file {}: {e})",
                self.ca_file.display()
            )
        });
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .unwrap_or_else(|e| panic!("bad PEM in CA file {}: {e}", self.ca_file.display()));
            roots.add(cert).unwrap_or_else(|e| {
                panic!("bad certificate in CA file {}: {e}", self.ca_file.display())
            });
        }
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Connection settings with the test bed's CA (and a connect timeout).
    pub fn conn_settings(&self) -> LdapConnSettings {
        LdapConnSettings::new()
            .set_config(self.tls_config())
            .set_conn_timeout(Duration::from_secs(10))
    }

    /// An LDAPS connection, server certificate verified against the test bed's CA, bound as the
    /// administrator.
    pub async fn connect_ldaps(&self) -> Ldap {
        self.connect(self.conn_settings(), &self.ldaps_url).await
    }

    /// A plain LDAP connection upgraded with StartTLS (CA-verified), bound as the administrator.
    pub async fn connect_starttls(&self) -> Ldap {
        self.connect(self.conn_settings().set_starttls(true), &self.ldap_url)
            .await
    }

    async fn connect(&self, settings: LdapConnSettings, url: &str) -> Ldap {
        self.connect_as(settings, url, &self.bind_dn, &self.bind_password)
            .await
    }

    async fn connect_as(
        &self,
        settings: LdapConnSettings,
        url: &str,
        dn: &str,
        password: &str,
    ) -> Ldap {
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .unwrap_or_else(|e| panic!("{NOT_RUNNING} (cannot connect to {url}: {e})"));
        ldap3::drive!(conn);
        let bound = ldap
            .simple_bind(dn, password)
            .await
            .and_then(|r| r.success());
        if let Err(e) = bound {
            panic!("simple bind as {dn} to {url} failed: {e}");
        }
        ldap
    }

    /// Grants the service account the rights on `ou` that docs/OPERATIONS.md documents, with
    /// the project's own `packaging/delegate-samba.sh` (run on the DC's files, as an
    /// administrator would). Panics when the script fails.
    pub fn delegate(&self, ou: &str) {
        self.delegate_attributes(ou, &[]);
    }

    /// Delegates write access to `attributes` on the groups below `ou` (added to what the OU
    /// already grants), for rules that write more than the default ones; empty means the
    /// script's default set together with create and delete.
    pub fn delegate_attributes(&self, ou: &str, attributes: &[&str]) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/delegate-samba.sh");
        let out = std::process::Command::new(&script)
            .arg("-H")
            .arg(self.instance_dir.join("private/sam.ldb"))
            .arg("-s")
            .arg(self.instance_dir.join("etc/smb.conf"))
            .arg(ou)
            .arg(&self.service_account)
            .args(attributes)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {ou} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Lets the service account write `member` on `target` (a group or an OU of groups outside
    /// the managed OUs: a link target), with `packaging/delegate-samba.sh -l`.
    pub fn delegate_link_target(&self, target: &str) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/delegate-samba.sh");
        let out = std::process::Command::new(&script)
            .arg("-l")
            .arg("-H")
            .arg(self.instance_dir.join("private/sam.ldb"))
            .arg("-s")
            .arg(self.instance_dir.join("etc/smb.conf"))
            .arg(target)
            .arg(&self.service_account)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} -l {target} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An LDAPS connection bound as the service account (to check what it may and may not do).
    pub async fn connect_as_service(&self) -> Ldap {
        self.connect_as(
            self.conn_settings(),
            &self.ldaps_url,
            &self.service_dn,
            &self.service_password,
        )
        .await
    }

    /// `OU=<name>,<base DN>`.
    pub fn ou_dn(&self, name: &str) -> String {
        format!("OU={},{}", ldap3::dn_escape(name), self.base_dn)
    }

    /// Runs `body` with a fresh OU (named by [`unique_ou_name`]) directly under the base DN and
    /// deletes that OU's subtree afterwards, also when `body` panics. `body` gets its own bound
    /// LDAPS connection and the OU's DN.
    pub async fn with_scratch_ou<F, Fut, T>(&self, prefix: &str, body: F) -> T
    where
        F: FnOnce(Ldap, String) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let ou = self.ou_dn(&unique_ou_name(prefix));
        let mut admin = self.connect_ldaps().await;
        create_ou(&mut admin, &ou).await;
        let work = self.connect_ldaps().await;
        // A task, so a panic in the body is caught and the OU still gets deleted.
        let outcome = ldap3::tokio::spawn(body(work, ou.clone())).await;
        delete_subtree(&mut admin, &ou).await;
        let _ = admin.unbind().await;
        match outcome {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("test body in {ou} did not finish: {e}"),
        }
    }
}

/// A DC stopped by [`AdTestbed::stop_dc`]: [`start`](Self::start) it again, or it starts when
/// this is dropped.
#[derive(Debug)]
pub struct StoppedDc {
    testbed: Option<AdTestbed>,
}

impl StoppedDc {
    /// Starts the DC again with `samba-ad.sh --forest <f> up` (same instance, same data, same
    /// address) and returns the new settings (a new PID). Panics when it does not come up.
    pub fn start(mut self) -> AdTestbed {
        let testbed = self.testbed.take().expect("a stopped DC");
        testbed.run_script("up");
        testbed.reload()
    }
}

impl Drop for StoppedDc {
    fn drop(&mut self) {
        if let Some(testbed) = self.testbed.take() {
            // A test that failed while the DC was down must not leave it down for the next.
            let restart = std::panic::catch_unwind(|| testbed.run_script("up"));
            if restart.is_err() {
                eprintln!(
                    "could not start forest {}'s DC again; run: sudo tests/testbed/samba-ad.sh --forest {} up",
                    testbed.forest.to_uppercase(),
                    testbed.forest
                );
            }
        }
    }
}

/// The settings file: `$WRITEBACK_TESTBED_ENV`, else `<workspace root>/.testbed/samba.env`.
pub fn env_file_path() -> PathBuf {
    match std::env::var_os(ENV_FILE_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(".testbed/samba.env"),
    }
}

/// Forest B's settings file: `$WRITEBACK_TESTBED_B_ENV`, else
/// `<workspace root>/.testbed/forest-b/samba.env`.
pub fn env_file_b_path() -> PathBuf {
    match std::env::var_os(ENV_FILE_B_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(".testbed/forest-b/samba.env"),
    }
}

/// Parses `KEY=VALUE` lines (comments and blank lines allowed; values optionally single- or
/// double-quoted, as `samba-ad.sh` writes them) read from `path`. Keys later versions of the
/// script added have defaults, so a DC started by an older script still loads.
fn parse_env(text: &str, path: &Path) -> Result<AdTestbed, String> {
    let get = |key: &str| env_value(text, key).ok_or_else(|| format!("{key} is missing"));
    let base_dn = get("AD_BASE_DN")?;
    let ldap_url = get("AD_LDAP_URL")?;
    let ip = env_value(text, "AD_IP").unwrap_or_else(|| {
        ldap_url
            .split_once("://")
            .map_or(ldap_url.as_str(), |(_, rest)| rest)
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host)
            .to_string()
    });
    Ok(AdTestbed {
        ldaps_url: get("AD_LDAPS_URL")?,
        bind_dn: get("AD_BIND_DN")?,
        bind_password: get("AD_BIND_PASSWORD")?,
        service_account: get("AD_SERVICE_ACCOUNT")?,
        service_dn: get("AD_SERVICE_DN")?,
        service_password: get("AD_SERVICE_PASSWORD")?,
        instance_dir: PathBuf::from(get("AD_INSTANCE_DIR")?),
        ca_file: PathBuf::from(get("AD_CA_FILE")?),
        realm: env_value(text, "AD_REALM").unwrap_or_else(|| realm_of(&base_dn)),
        forest: env_value(text, "AD_FOREST").unwrap_or_else(|| "a".to_string()),
        ip,
        state_dir: env_value(text, "AD_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| path.parent().map(Path::to_path_buf))
            .unwrap_or_default(),
        env_file: path.to_path_buf(),
        pid: env_value(text, "AD_PID").and_then(|pid| pid.parse().ok()),
        base_dn,
        ldap_url,
    })
}

/// `DC=corp,DC=example,DC=test` -> `CORP.EXAMPLE.TEST`.
fn realm_of(base_dn: &str) -> String {
    base_dn
        .split(',')
        .filter_map(|rdn| rdn.trim().strip_prefix("DC="))
        .collect::<Vec<_>>()
        .join(".")
        .to_ascii_uppercase()
}

/// The last value of `key` in the file (as a shell would see it after sourcing).
pub(crate) fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter(|(k, _)| !k.starts_with('#') && k.trim() == key)
        .map(|(_, v)| unquote(v.trim()))
        .next_back()
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        // samba-ad.sh writes a ' inside single quotes as '\''
        value[1..value.len() - 1].replace("'\\''", "'")
    } else if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        value[1..value.len() - 1].to_string()
    } else {
        value.to_string()
    }
}

/// A name for a test's own OU: `wb-<prefix>-<16 hex digits>`, different on every call.
pub fn unique_ou_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = prefix.strip_prefix("wb-").unwrap_or(prefix);
    // RandomState is seeded randomly per process; time, PID and counter separate the calls.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("wb-{prefix}-{:016x}", hasher.finish())
}

/// Creates an organizational unit. Panics when it cannot (including when it exists).
pub async fn create_ou(ldap: &mut Ldap, dn: &str) {
    let attrs = vec![("objectClass", HashSet::from(["top", "organizationalUnit"]))];
    if let Err(e) = ldap.add(dn, attrs).await.and_then(|r| r.success()) {
        panic!("cannot create OU {dn}: {e}");
    }
}

/// Deletes `dn` and everything below it, deepest entries first. A missing `dn` is not an error.
/// Uses a paged subtree search, so it works for any number of entries; referrals are skipped.
pub async fn delete_subtree(ldap: &mut Ldap, dn: &str) {
    let adapters: Vec<Box<dyn Adapter<&str, Vec<&str>>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(500)),
    ];
    let mut dns = Vec::new();
    let mut stream = ldap
        .streaming_search_with(
            adapters,
            dn,
            Scope::Subtree,
            "(objectClass=*)",
            vec!["objectClass"],
        )
        .await
        .unwrap_or_else(|e| panic!("cannot search {dn} for deletion: {e}"));
    loop {
        match stream.next().await {
            Ok(Some(entry)) => {
                let entry = ldap3::SearchEntry::construct(entry);
                let is_group = entry
                    .attrs
                    .get("objectClass")
                    .is_some_and(|classes| classes.iter().any(|c| c.eq_ignore_ascii_case("group")));
                dns.push((entry.dn, is_group));
            }
            Ok(None) => break,
            Err(e) => panic!("search of {dn} for deletion failed: {e}"),
        }
    }
    let result = stream.finish().await;
    if result.rc == NO_SUCH_OBJECT {
        return;
    }
    if let Err(e) = result.success() {
        panic!("search of {dn} for deletion failed: {e}");
    }
    // Deepest level first, and groups before the other entries of their level: deleting a
    // group drops all its member links at once, instead of one group update per deleted member.
    // Entries of one batch are independent, so they go over a few pipelined requests (Samba
    // serialises writes, but this hides the round trips).
    let mut levels: BTreeMap<(Reverse<usize>, bool), Vec<String>> = BTreeMap::new();
    for (entry_dn, is_group) in dns {
        levels
            .entry((Reverse(dn_depth(&entry_dn)), !is_group))
            .or_default()
            .push(entry_dn);
    }
    for mut level in levels.into_values() {
        level.sort();
        let mut workers = ldap3::tokio::task::JoinSet::new();
        for chunk in level.chunks(level.len().div_ceil(DELETE_WORKERS)) {
            let mut ldap = ldap.clone();
            let chunk = chunk.to_vec();
            workers.spawn(async move {
                for entry_dn in chunk {
                    match ldap.delete(&entry_dn).await {
                        Ok(r) if r.rc == 0 || r.rc == NO_SUCH_OBJECT => {}
                        Ok(r) => return Err(format!("cannot delete {entry_dn}: {r}")),
                        Err(e) => return Err(format!("cannot delete {entry_dn}: {e}")),
                    }
                }
                Ok(())
            });
        }
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{e}"),
                Err(e) => panic!("delete worker under {dn} failed: {e}"),
            }
        }
    }
}

/// Number of RDNs in a DN: unescaped commas plus one (a backslash escapes the next character,
/// which also covers `\2C`-style hex escapes).
fn dn_depth(dn: &str) -> usize {
    let mut depth = 1;
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            ',' => depth += 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_env_file_samba_ad_sh_writes() {
        let text =
            "# comment\nAD_LDAP_URL=ldap://127.0.0.1:389\nAD_LDAPS_URL=ldaps://127.0.0.1:636\n\
                    AD_BASE_DN=DC=corp,DC=example,DC=test\n\
                    AD_BIND_DN=CN=Administrator,CN=Users,DC=corp,DC=example,DC=test\n\
                    AD_BIND_PASSWORD='it'\\''s secret'\nAD_CA_FILE=/x/ca.pem\nAD_PID=42\n\
                    AD_SERVICE_ACCOUNT=svc-writeback\n\
                    AD_SERVICE_DN=CN=svc-writeback,CN=Users,DC=corp,DC=example,DC=test\n\
                    AD_SERVICE_PASSWORD=s\nAD_INSTANCE_DIR=/x/samba\n";
        let tb = parse_env(text, Path::new("/x/samba.env")).unwrap();
        assert_eq!(tb.base_dn, "DC=corp,DC=example,DC=test");
        // Keys older scripts did not write have defaults.
        assert_eq!(tb.realm, "CORP.EXAMPLE.TEST");
        assert_eq!(tb.forest, "a");
        assert_eq!(tb.ip, "127.0.0.1");
        assert_eq!(tb.state_dir, PathBuf::from("/x"));
        assert_eq!(tb.pid, Some(42));
        assert_eq!(tb.bind_password, "it's secret");
        assert_eq!(tb.ca_file, PathBuf::from("/x/ca.pem"));
        assert_eq!(env_value(text, "AD_PID").as_deref(), Some("42"));
    }

    #[test]
    fn reports_missing_keys() {
        let err = parse_env(
            "AD_LDAP_URL=ldap://127.0.0.1:389\nAD_BASE_DN=DC=corp,DC=example,DC=test\n",
            Path::new("/x/samba.env"),
        )
        .unwrap_err();
        assert_eq!(err, "AD_LDAPS_URL is missing");
    }

    #[test]
    fn parses_forest_b_settings() {
        let text = "AD_LDAP_URL=ldap://127.0.0.3:389\nAD_LDAPS_URL=ldaps://127.0.0.3:636\n\
                    AD_BASE_DN=DC=fabrikam,DC=example,DC=test\n\
                    AD_BIND_DN=CN=Administrator,CN=Users,DC=fabrikam,DC=example,DC=test\n\
                    AD_BIND_PASSWORD=p\nAD_CA_FILE=/s/b/samba/private/tls/ca.pem\n\
                    AD_SERVICE_ACCOUNT=svc-writeback\n\
                    AD_SERVICE_DN=CN=svc-writeback,CN=Users,DC=fabrikam,DC=example,DC=test\n\
                    AD_SERVICE_PASSWORD=s\nAD_INSTANCE_DIR=/s/b/samba\n\
                    AD_REALM=FABRIKAM.EXAMPLE.TEST\nAD_FOREST=b\nAD_IP=127.0.0.3\n\
                    AD_STATE_DIR=/s/b\n";
        let tb = parse_env(text, Path::new("/elsewhere/samba.env")).unwrap();
        assert_eq!(tb.forest, "b");
        assert_eq!(tb.realm, "FABRIKAM.EXAMPLE.TEST");
        assert_eq!(tb.ip, "127.0.0.3");
        assert_eq!(tb.state_dir, PathBuf::from("/s/b"));
        assert_eq!(tb.env_file, PathBuf::from("/elsewhere/samba.env"));
        assert_eq!(tb.pid, None);
    }

    #[test]
    fn dn_depth_counts_unescaped_commas() {
        assert_eq!(dn_depth("DC=corp,DC=example,DC=test"), 3);
        assert_eq!(dn_depth("CN=Doe\\, Jane,OU=x,DC=test"), 3);
        assert_eq!(dn_depth("CN=a\\\\,OU=x"), 2);
        assert_eq!(dn_depth("CN=a\\2Cb,OU=x"), 2);
    }

    #[test]
    fn unique_ou_names_differ_and_carry_the_prefix() {
        let a = unique_ou_name("ad-smoke");
        let b = unique_ou_name("wb-ad-smoke");
        assert!(a.starts_with("wb-ad-smoke-"), "{a}");
        assert!(b.starts_with("wb-ad-smoke-"), "{b}");
        assert_ne!(a, b);
    }
}
