//! Where triggers' HTTP requests may go.
//!
//! A trigger runs with the host's network position: without a policy it could read cloud
//! metadata (169.254.169.254), local admin ports or the daemon's own listener and post the
//! answer out. Two checks, both before any connection:
//!
//! - the host name against `[rules] http_allowed_hosts` (when set, only those hosts);
//! - every address the name resolves to against the address classes: link-local and
//!   unspecified addresses are never reached; loopback, private and shared addresses only
//!   inside `[rules] http_allowed_networks`.
//!
//! The address check runs in the HTTP client's resolver ([`PolicyResolver`]), so the addresses
//! checked are the ones connected to: a name that resolves to a public address once and to
//! 127.0.0.1 the next time (DNS rebinding) gains nothing. The policy itself is pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::ad::discover::ResolverError;

/// Why an address is not reached by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 169.254.0.0/16, fe80::/10: cloud metadata endpoints live here. Never reached.
    LinkLocal,
    /// 0.0.0.0/8, ::, multicast, broadcast: not a destination. Never reached.
    NotADestination,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7, and 100.64/10 (shared address space).
    Private,
    /// Anything else.
    Public,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::LinkLocal => "link-local",
            AddressClass::NotADestination => "not a destination",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::Public => "public",
        }
    }
}

/// Why an address is not connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    /// Link-local or not a destination: refused whatever the config says.
    #[error("{ip} is a {} address, never reached", class.as_str())]
    Never { ip: IpAddr, class: AddressClass },
    /// Loopback, private or shared, and outside `rules.http_allowed_networks`.
    #[error("{ip} is a {} address, not in rules.http_allowed_networks", class.as_str())]
    NotAllowed { ip: IpAddr, class: AddressClass },
}

/// The class of `ip`; an IPv4 address inside IPv6 (`::ffff:a.b.c.d`, the NAT64 prefix
/// `64:ff9b::/96`) is classed as the IPv4 address it carries.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        AddressClass::NotADestination
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_unspecified() || ip.is_multicast() {
        AddressClass::NotADestination
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        // Unique local, and the deprecated site-local still routed by some networks.
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    // 64:ff9b::/96, the well-known NAT64 prefix: the last 32 bits are the IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = s;
        return Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    None
}

/// A host the allow-list names: exactly, or `*.example.com` for the names below it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Below(String),
}

/// The destinations triggers may reach (`[rules] http_allowed_hosts`, `http_allowed_networks`).
#[derive(Debug, Clone, Default)]
pub struct Egress {
    hosts: Vec<HostPattern>,
    networks: Vec<IpNet>,
    /// Name servers for the destinations' addresses; empty = the system's.
    name_servers: Vec<SocketAddr>,
}

impl Egress {
    /// The policy from the config's lists. Errors name the entry (by index) and say why.
    pub fn new(hosts: &[String], networks: &[String]) -> Result<Egress, (String, String)> {
        let mut out = Egress::default();
        for (i, h) in hosts.iter().enumerate() {
            let key = format!("rules.http_allowed_hosts[{i}]");
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let (pattern, name) = match h.strip_prefix("*.") {
                Some(rest) => (HostPattern::Below(rest.to_string()), rest.to_string()),
                None => (HostPattern::Exact(h.clone()), h.clone()),
            };
            let label =
                |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let ok = name.parse::<IpAddr>().is_ok() || name.split('.').all(label);
            if !ok {
                return Err((
                    key,
                    format!("{h:?} is not a host name (\"hooks.example.com\", \"*.example.com\") or an IP address"),
                ));
            }
            out.hosts.push(pattern);
        }
        for (i, n) in networks.iter().enumerate() {
            let key = format!("rules.http_allowed_networks[{i}]");
            let net: IpNet = n
                .trim()
                .parse()
                .or_else(|_| n.trim().parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    (
                        key.clone(),
                        format!("{n:?} is not an IP network like \"10.20.0.0/16\" or an address"),
                    )
                })?;
            let never = [net.network(), net.broadcast()]
                .into_iter()
                .map(classify)
                .any(|c| matches!(c, AddressClass::LinkLocal | AddressClass::NotADestination));
            if never {
                return Err((
                    key,
                    format!("{n}: link-local and non-destination addresses (cloud metadata endpoints) are never reached by triggers"),
                ));
            }
            out.networks.push(net.trunc());
        }
        Ok(out)
    }

    /// The same policy, with the destinations' addresses asked of `servers`.
    pub fn with_name_servers(mut self, servers: Vec<SocketAddr>) -> Egress {
        self.name_servers = servers;
        self
    }

    /// Whether the allow-list lets `host` (a name or an address) be asked at all.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let host = host
            .trim_matches(['[', ']'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.hosts.iter().any(|p| match p {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Below(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        })
    }

    /// `Ok` when `ip` may be connected to; else why not.
    pub fn address_allowed(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            class @ (AddressClass::LinkLocal | AddressClass::NotADestination) => {
                Err(AddressRefused::Never { ip, class })
            }
            class => {
                let inside = self.networks.iter().any(|n| n.contains(&ip))
                    || embedded(ip).is_some_and(|v4| self.networks.iter().any(|n| n.contains(&v4)));
                if inside {
                    Ok(())
                } else {
                    Err(AddressRefused::NotAllowed { ip, class })
                }
            }
        }
    }

    /// A resolver for the HTTP client that hands it only the addresses this policy allows.
    pub fn resolver(&self, timeout: Duration) -> Result<PolicyResolver, ResolverError> {
        Ok(PolicyResolver {
            policy: Arc::new(self.clone()),
            dns: Arc::new(crate::ad::discover::resolver_with(
                &self.name_servers,
                timeout,
            )?),
        })
    }
}

fn embedded(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// Resolves a destination's name and keeps the addresses the policy allows; none left is an
/// error naming each address and why, and nothing is connected to.
pub struct PolicyResolver {
    policy: Arc<Egress>,
    dns: Arc<hickory_resolver::TokioResolver>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let dns = self.dns.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let fqdn = format!("{}.", host.trim_end_matches('.'));
            let found = dns.lookup_ip(fqdn.as_str()).await?;
            let mut allowed = Vec::new();
            let mut refused = Vec::new();
            for ip in found.iter() {
                match policy.address_allowed(ip) {
                    Ok(()) => allowed.push(SocketAddr::new(ip, 0)),
                    Err(why) => refused.push(why.to_string()),
                }
            }
            if allowed.is_empty() {
                let why = if refused.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!(
                        "{host} resolves to refused addresses: {}",
                        refused.join("; ")
                    )
                };
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classed_without_connecting() {
        for (a, c) in [
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::NotADestination),
            ("::", AddressClass::NotADestination),
            ("255.255.255.255", AddressClass::NotADestination),
            ("224.0.0.1", AddressClass::NotADestination),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.8.9.10", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd00::1", AddressClass::Private),
            ("64:ff9b::a00:1", AddressClass::Private),
            ("8.8.8.8", AddressClass::Public),
            ("2001:db8::1", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
        ] {
            assert_eq!(classify(ip(a)), c, "{a}");
        }
    }

    #[test]
    fn by_default_only_public_addresses_are_reached() {
        let e = Egress::default();
        for a in ["169.254.169.254", "fe80::1", "10.0.0.1", "127.0.0.1", "::1"] {
            let why = e.address_allowed(ip(a)).unwrap_err().to_string();
            assert!(why.contains(a), "{why}");
        }
        assert!(e.address_allowed(ip("93.184.216.34")).is_ok());
    }

    #[test]
    fn allowed_networks_open_private_and_loopback_ranges_never_link_local() {
        let e = Egress::new(&[], &["10.20.0.0/16".into(), "127.0.0.1".into()]).unwrap();
        assert!(e.address_allowed(ip("10.20.3.4")).is_ok());
        assert!(e.address_allowed(ip("::ffff:10.20.3.4")).is_ok());
        assert!(e.address_allowed(ip("127.0.0.1")).is_ok());
        assert!(e.address_allowed(ip("127.0.0.2")).is_err());
        assert!(e.address_allowed(ip("10.21.0.1")).is_err());
        assert!(e.address_allowed(ip("169.254.169.254")).is_err());
        for bad in ["169.254.0.0/16", "fe80::/10", "0.0.0.0/0", "not a net"] {
            let (key, why) = Egress::new(&[], &[bad.into()]).unwrap_err();
            assert_eq!(key, "rules.http_allowed_networks[0]", "{bad}: {why}");
        }
    }

    #[test]
    fn the_host_allow_list_matches_names_and_names_below() {
        assert!(Egress::default().host_allowed("anything.example"));
        let e = Egress::new(
            &[
                "hooks.example.com".into(),
                "*.Slack.com.".into(),
                "10.1.2.3".into(),
            ],
            &[],
        )
        .unwrap();
        assert!(e.host_allowed("HOOKS.example.com"));
        assert!(e.host_allowed("hooks.slack.com"));
        assert!(e.host_allowed("10.1.2.3"));
        assert!(!e.host_allowed("slack.com"));
        assert!(!e.host_allowed("evilslack.com"));
        assert!(!e.host_allowed("hooks.example.com.evil.test"));
        assert!(!e.host_allowed("127.0.0.1"));
        let (key, _) = Egress::new(&["bad host/".into()], &[]).unwrap_err();
        assert_eq!(key, "rules.http_allowed_hosts[0]");
    }
}
