//! Finding a domain's domain controllers in DNS: the `_ldap._tcp.dc._msdcs.<domain>` SRV
//! records (what Windows' DC locator asks), ordered as RFC 2782 says, and the addresses of the
//! DCs they name, asked of the same name servers.
//!
//! DNS is not trusted: an answer (unsigned, spoofable) may only name hosts inside the
//! discovered domain or a domain the config allows (`within`, pure); the TLS and bind settings
//! that make it safe to follow are enforced by the config (a pinned CA file or Kerberos, never
//! plain LDAP).
//!
//! The ordering is pure (`order`, with the random source passed in); the lookups go through
//! hickory-resolver, to the system's name servers or to the ones the config names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::error::AdError;
pub use super::error::{DiscoveryError, ResolverError};

/// Where the DCs are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The AD domain, e.g. `corp.example.test`.
    pub domain: String,
    /// Name servers (port 53 unless given); empty = the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Other DNS domains whose hosts may be DCs (`ad.discover_allowed_domains`); the domain
    /// itself always is.
    pub allowed_domains: Vec<String>,
}

impl Discovery {
    /// The SRV name of the domain's LDAP service on domain controllers.
    pub fn srv_name(&self) -> String {
        format!(
            "_ldap._tcp.dc._msdcs.{}.",
            self.domain.trim_end_matches('.')
        )
    }
}

/// True when `host` is `domain` or a name below it (`dc1.corp.example.test` in
/// `corp.example.test`), compared without case and trailing dots. `evilcorp.example.test` is
/// not in `corp.example.test`.
pub fn within(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || host.is_empty() {
        return false;
    }
    host == domain
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|head| head.ends_with('.') && head.len() > 1)
}

/// Splits SRV targets into those a DC may be (inside the domain or an allowed one) and the
/// others, which a spoofed or misconfigured answer could point anywhere: a bind sent there
/// would hand the service account's credentials to that host.
pub fn trusted(d: &Discovery, targets: Vec<SrvTarget>) -> (Vec<SrvTarget>, Vec<SrvTarget>) {
    targets.into_iter().partition(|t| {
        within(&t.target, &d.domain) || d.allowed_domains.iter().any(|a| within(&t.target, a))
    })
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Host name without the trailing dot.
    pub target: String,
}

/// RFC 2782's order: lower priority first; within one priority, a weighted random order
/// (each pick chooses among the rest with probability proportional to weight; weight-0
/// records come first in the running sums, so they are picked only rarely, as the RFC wants).
/// `pick(total)` returns a number in `0..=total`. A target of `.` means "no such service
/// here" and is dropped.
pub fn order(records: Vec<SrvTarget>, mut pick: impl FnMut(u32) -> u32) -> Vec<SrvTarget> {
    let mut records: Vec<SrvTarget> = records
        .into_iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .collect();
    // Stable: records of the same priority keep the order they came in, weight 0 first.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records.first().map(|r| r.priority).unwrap_or_default();
        let end = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<SrvTarget> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let chosen = pick(total).min(total);
            let mut running = 0u32;
            let mut at = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= chosen {
                    at = i;
                    break;
                }
            }
            out.push(group.remove(at));
        }
    }
    out
}

/// The URL to reach a DC the SRV record names: LDAPS on 636 unless the connection is plain
/// LDAP upgraded by StartTLS (or allowed plain), which uses the record's own port.
pub fn url_for(target: &SrvTarget, ldaps: bool) -> String {
    if ldaps {
        format!("ldaps://{}:636", target.target)
    } else {
        format!("ldap://{}:{}", target.target, target.port)
    }
}

/// A resolver for the discovery's name servers.
pub fn resolver(d: &Discovery, timeout: Duration) -> Result<TokioResolver, AdError> {
    resolver_with(&d.servers, timeout).map_err(|e| not_found(d, e.into()))
}

/// An uncaching resolver asking `servers` (port 53 unless given), or the system's name servers
/// when `servers` is empty. Also used for the addresses of trigger destinations.
pub fn resolver_with(
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, ResolverError> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(ResolverError::SystemConfig)?
    } else {
        let servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    // The DC list is read at each (re)connection: a cached answer would hide a DC added or
    // removed since (and a trigger's destination is checked on the answer it connects to).
    opts.cache_size = 0;
    builder.build().map_err(ResolverError::Build)
}

fn not_found(d: &Discovery, cause: DiscoveryError) -> AdError {
    AdError::Discovery {
        domain: d.domain.clone(),
        cause: Box::new(cause),
    }
}

/// The domain's DCs as SRV records, in RFC 2782 order.
pub async fn lookup(d: &Discovery, resolver: &TokioResolver) -> Result<Vec<SrvTarget>, AdError> {
    let name = d.srv_name();
    let answer = resolver.srv_lookup(name.as_str()).await.map_err(|cause| {
        not_found(
            d,
            DiscoveryError::Srv {
                name: name.clone(),
                cause,
            },
        )
    })?;
    let records: Vec<SrvTarget> = answer
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(SrvTarget {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii().trim_end_matches('.').to_string(),
            }),
            _ => None,
        })
        .collect();
    let ordered = order(records, |total| rand::random_range(0..=total));
    let (ordered, outside) = trusted(d, ordered);
    let outside: Vec<&str> = outside.iter().map(|t| t.target.as_str()).collect();
    if !outside.is_empty() {
        tracing::warn!(
            domain = %d.domain,
            refused = %outside.join(", "),
            "DNS named domain controllers outside the domain; they are not contacted (allow their domain with ad.discover_allowed_domains if they are yours)"
        );
    }
    if ordered.is_empty() {
        let cause = if outside.is_empty() {
            DiscoveryError::NoneListed { name }
        } else {
            DiscoveryError::AllOutside {
                name,
                hosts: outside.iter().map(|h| h.to_string()).collect(),
                domain: d.domain.clone(),
            }
        };
        return Err(not_found(d, cause));
    }
    Ok(ordered)
}

/// The addresses of `host`, from the discovery's name servers (IPv4 first).
pub async fn addresses(
    d: &Discovery,
    resolver: &TokioResolver,
    host: &str,
) -> Result<Vec<IpAddr>, AdError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    let found = resolver.lookup_ip(fqdn.as_str()).await.map_err(|cause| {
        not_found(
            d,
            DiscoveryError::Address {
                host: host.to_string(),
                cause,
            },
        )
    })?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 389,
            target: target.into(),
        }
    }

    fn names(v: &[SrvTarget]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn lower_priority_first_whatever_the_weight() {
        let got = order(
            vec![srv(20, 100, "c"), srv(0, 0, "a"), srv(10, 50, "b")],
            |_| 0,
        );
        assert_eq!(names(&got), ["a", "b", "c"]);
    }

    #[test]
    fn within_a_priority_the_weights_decide() {
        let recs = || vec![srv(0, 10, "light"), srv(0, 90, "heavy")];
        // running sums: light 10, heavy 100
        assert_eq!(names(&order(recs(), |_| 5)), ["light", "heavy"]);
        assert_eq!(names(&order(recs(), |_| 10)), ["light", "heavy"]);
        assert_eq!(names(&order(recs(), |_| 11)), ["heavy", "light"]);
        assert_eq!(names(&order(recs(), |t| t)), ["heavy", "light"]);
        // a pick out of range is clamped, not a panic
        assert_eq!(names(&order(recs(), |_| u32::MAX)), ["heavy", "light"]);
    }

    #[test]
    fn weight_zero_is_picked_only_when_the_draw_is_zero() {
        let recs = || vec![srv(0, 5, "w5"), srv(0, 0, "w0")];
        // sorted: w0 (running 0), w5 (running 5)
        assert_eq!(names(&order(recs(), |_| 0)), ["w0", "w5"]);
        assert_eq!(names(&order(recs(), |t| t.min(1))), ["w5", "w0"]);
        // all weights zero: the order they came in
        let zeros = vec![srv(0, 0, "x"), srv(0, 0, "y")];
        assert_eq!(names(&order(zeros, |_| 0)), ["x", "y"]);
    }

    #[test]
    fn weighted_picks_follow_the_weights_over_many_draws() {
        // With a real random source, the heavy record leads about 9 times in 10.
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let got = order(vec![srv(0, 10, "light"), srv(0, 90, "heavy")], |total| {
                rand::random_range(0..=total)
            });
            if got.first().map(|r| r.target.as_str()) == Some("heavy") {
                heavy_first += 1;
            }
        }
        assert!((1650..=1950).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn a_dot_target_means_no_service() {
        let got = order(vec![srv(0, 0, "."), srv(1, 0, "dc1")], |_| 0);
        assert_eq!(names(&got), ["dc1"]);
    }

    #[test]
    fn urls_and_names() {
        let t = SrvTarget {
            priority: 0,
            weight: 0,
            port: 3389,
            target: "dc1.corp.example.test".into(),
        };
        assert_eq!(url_for(&t, true), "ldaps://dc1.corp.example.test:636");
        assert_eq!(url_for(&t, false), "ldap://dc1.corp.example.test:3389");
        let d = Discovery {
            domain: "corp.example.test.".into(),
            servers: vec![],
            allowed_domains: vec![],
        };
        assert_eq!(d.srv_name(), "_ldap._tcp.dc._msdcs.corp.example.test.");
    }

    #[test]
    fn a_host_is_within_its_domain_and_no_other() {
        assert!(within("dc1.corp.example.test", "corp.example.test"));
        assert!(within("DC1.Corp.Example.Test.", "corp.example.test."));
        assert!(within("corp.example.test", "corp.example.test"));
        assert!(within("a.b.corp.example.test", "corp.example.test"));
        assert!(!within("evilcorp.example.test", "corp.example.test"));
        assert!(!within("dc.attacker.example", "corp.example.test"));
        assert!(!within(
            "corp.example.test.attacker.example",
            "corp.example.test"
        ));
        assert!(!within("localhost", "corp.example.test"));
        assert!(!within(".corp.example.test", "corp.example.test"));
        assert!(!within("dc1.corp.example.test", ""));
    }

    #[test]
    fn targets_outside_the_domain_and_the_allowed_ones_are_refused() {
        let d = Discovery {
            domain: "corp.example.test".into(),
            servers: vec![],
            allowed_domains: vec!["dcs.example.net".into()],
        };
        let (ok, refused) = trusted(
            &d,
            vec![
                srv(0, 0, "dc.attacker.example"),
                srv(0, 0, "dc1.corp.example.test"),
                srv(0, 0, "dc9.dcs.example.net"),
                srv(0, 0, "localhost"),
            ],
        );
        assert_eq!(names(&ok), ["dc1.corp.example.test", "dc9.dcs.example.net"]);
        assert_eq!(names(&refused), ["dc.attacker.example", "localhost"]);
    }
}
