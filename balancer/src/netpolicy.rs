//! Where the balancer may connect out: one address policy for webhook receivers and for
//! nodes (registration and proxy connects), and the set of trusted proxies whose
//! forwarding headers are kept.
//!
//! A [`NetPolicy`] is an allow-list of networks that always wins, a deny-list, and an
//! answer for everything else. Webhooks deny loopback, private, link-local, unique-local,
//! shared (CGNAT), metadata, unspecified, broadcast and multicast addresses unless the
//! operator allows a network (`--webhook-allow-networks`). Nodes refuse link-local and
//! metadata addresses by default, or allow only `--node-networks` when set. Names are
//! checked after DNS resolution, and the connection goes to an address that was checked
//! ([`PolicyResolver`] for hyper, [`ReqwestResolver`] for reqwest): a name that resolves
//! to a public address when checked and to an internal one at connect time (DNS
//! rebinding) is still refused.
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use ipnet::IpNet;

/// Time allowed for the DNS lookup of a check made in a request handler.
pub const CHECK_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Cloud metadata endpoints outside the link-local ranges (Alibaba, AWS over IPv6,
/// Oracle's legacy one is link-local already).
const METADATA: [&str; 2] = ["100.100.100.200/32", "fd00:ec2::254/128"];

/// Link-local ranges (cloud metadata at 169.254.169.254 included).
const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// Every range a webhook must not reach unless allowed.
const INTERNAL: [&str; 16] = [
    "0.0.0.0/8",      // "this network", 0.0.0.0 reaches the host itself
    "10.0.0.0/8",     // private
    "100.64.0.0/10",  // shared address space (carrier-grade NAT, Alibaba metadata)
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, metadata
    "172.16.0.0/12",  // private
    "192.0.0.0/24",   // IETF protocol assignments
    "192.168.0.0/16", // private
    "198.18.0.0/15",  // benchmarking
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved, broadcast
    "::/128",         // unspecified
    "::1/128",        // loopback
    "fc00::/7",       // unique-local (fd00:ec2::254, AWS metadata, included)
    "fe80::/10",      // link-local
    "ff00::/8",       // multicast
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|s| IpNet::from_str(s).ok())
        .collect()
}

/// Which addresses may be connected to.
#[derive(Clone, PartialEq, Eq)]
pub struct NetPolicy {
    allow: Arc<[IpNet]>,
    deny: Arc<[IpNet]>,
    otherwise: bool,
}

impl std::fmt::Debug for NetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPolicy")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("otherwise", &self.otherwise)
            .finish()
    }
}

impl Default for NetPolicy {
    /// Allows everything.
    fn default() -> Self {
        NetPolicy {
            allow: Arc::from(Vec::new()),
            deny: Arc::from(Vec::new()),
            otherwise: true,
        }
    }
}

impl NetPolicy {
    /// Webhook receivers: public addresses, and whatever `allowed` names.
    pub fn webhooks(allowed: &[IpNet]) -> Self {
        NetPolicy {
            allow: Arc::from(allowed.to_vec()),
            deny: Arc::from(nets(&INTERNAL)),
            otherwise: true,
        }
    }

    /// Nodes: only `networks` when some are given; otherwise anything but link-local and
    /// metadata addresses (loopback and private networks stay allowed).
    pub fn nodes(networks: &[IpNet]) -> Self {
        if networks.is_empty() {
            let mut deny = nets(&LINK_LOCAL);
            deny.extend(nets(&METADATA));
            deny.extend(nets(&["0.0.0.0/32", "::/128"]));
            NetPolicy {
                allow: Arc::from(Vec::new()),
                deny: Arc::from(deny),
                otherwise: true,
            }
        } else {
            NetPolicy {
                allow: Arc::from(networks.to_vec()),
                deny: Arc::from(Vec::new()),
                otherwise: false,
            }
        }
    }

    /// Only the addresses in `networks` (e.g. trusted proxies); none when empty.
    pub fn only(networks: &[IpNet]) -> Self {
        NetPolicy {
            allow: Arc::from(networks.to_vec()),
            deny: Arc::from(Vec::new()),
            otherwise: false,
        }
    }

    /// Whether `ip` may be connected to (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.otherwise
    }

    /// The addresses of `addrs` that are allowed.
    pub fn filter(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
        addrs.into_iter().filter(|a| self.allows(a.ip())).collect()
    }

    /// Resolves `host` (a name or an IP literal, IPv6 with or without brackets) and
    /// checks every address: the allowed ones, or why there is none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Denied> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            match tokio::time::timeout(CHECK_LOOKUP_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
            {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err(Denied::Unresolved(e.to_string())),
                Err(_) => return Err(Denied::Unresolved("the DNS lookup timed out".into())),
            }
        };
        let allowed = self.filter(addrs.iter().copied());
        if allowed.is_empty() {
            return Err(match addrs.first() {
                Some(a) => Denied::Address(a.ip()),
                None => Denied::Unresolved("no address".into()),
            });
        }
        Ok(allowed)
    }
}

/// Why a host may not be connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Every address of the host is in a denied network.
    #[error("{0} is in a network the operator does not allow")]
    Address(IpAddr),
    /// The host has no address.
    #[error("cannot resolve: {0}")]
    Unresolved(String),
}

/// Parses `CIDR,CIDR,...` (a bare address is a single-host network).
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_network)
        .collect()
}

/// Parses one CIDR network, or a bare address as a single-host network (clap's parser
/// of the network flags).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    IpNet::from_str(s)
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("`{s}` is not a network: use CIDR, e.g. 10.0.0.0/8 or fd00::/8"))
}

/// A DNS resolver for hyper's `HttpConnector` that drops denied addresses, so the
/// connection goes to a checked address whatever the name resolves to at that moment.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: NetPolicy,
}

impl PolicyResolver {
    /// A resolver that applies `policy`.
    pub fn new(policy: NetPolicy) -> Self {
        PolicyResolver { policy }
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed = policy.filter(addrs.iter().copied());
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "`{}` resolves only to addresses the operator does not allow",
                        name.as_str()
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The same filter as a reqwest resolver (webhook deliveries).
#[derive(Debug, Clone)]
pub struct ReqwestResolver {
    policy: NetPolicy,
}

impl ReqwestResolver {
    /// A resolver that applies `policy`.
    pub fn new(policy: NetPolicy) -> Self {
        ReqwestResolver { policy }
    }
}

impl reqwest::dns::Resolve for ReqwestResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter(addrs.iter().copied());
            if allowed.is_empty() {
                return Err(format!(
                    "`{host}` resolves only to addresses the operator does not allow"
                )
                .into());
            }
            let it: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn webhooks_refuse_internal_ranges_unless_allowed() {
        let p = NetPolicy::webhooks(&[]);
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(!p.allows(ip(denied)), "{denied}");
        }
        for allowed in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(p.allows(ip(allowed)), "{allowed}");
        }
        let p = NetPolicy::webhooks(&parse_networks("127.0.0.0/8, 10.2.0.0/16").expect("nets"));
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("10.2.3.4")));
        assert!(!p.allows(ip("10.3.0.1")));
        assert!(!p.allows(ip("169.254.169.254")));
    }

    #[test]
    fn nodes_refuse_link_local_and_metadata_by_default() {
        let p = NetPolicy::nodes(&[]);
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(!p.allows(ip(denied)), "{denied}");
        }
        for allowed in ["127.0.0.1", "10.0.0.5", "192.168.1.9", "::1", "8.8.8.8"] {
            assert!(p.allows(ip(allowed)), "{allowed}");
        }
        let p = NetPolicy::nodes(&parse_networks("10.0.0.0/8").expect("nets"));
        assert!(p.allows(ip("10.9.9.9")));
        assert!(!p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("8.8.8.8")));
    }

    #[test]
    fn networks_parse_or_name_the_bad_one() {
        let n = parse_networks("10.0.0.0/8,::1, 192.0.2.7").expect("nets");
        assert_eq!(n.len(), 3);
        assert!(n[2].contains(&ip("192.0.2.7")));
        assert!(!n[2].contains(&ip("192.0.2.8")));
        // Host bits are dropped.
        assert_eq!(
            parse_network("10.1.2.3/8"),
            Ok(IpNet::from_str("10.0.0.0/8").expect("net"))
        );
        let e = parse_networks("10.0.0.0/8,nope").expect_err("bad");
        assert!(e.contains("nope"), "{e}");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(!NetPolicy::only(&[]).allows(ip("1.2.3.4")));
    }

    #[tokio::test]
    async fn resolution_is_checked() {
        let p = NetPolicy::webhooks(&[]);
        assert_eq!(
            p.resolve("127.0.0.1", 80).await,
            Err(Denied::Address(ip("127.0.0.1")))
        );
        assert_eq!(
            p.resolve("[::1]", 80).await,
            Err(Denied::Address(ip("::1")))
        );
        // `localhost` resolves to loopback addresses only.
        assert!(matches!(
            p.resolve("localhost", 80).await,
            Err(Denied::Address(_))
        ));
        let open = NetPolicy::webhooks(&parse_networks("127.0.0.0/8,::1/128").expect("nets"));
        let a = open.resolve("localhost", 81).await.expect("allowed");
        assert!(a.iter().all(|a| a.port() == 81 && a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn the_resolvers_drop_denied_addresses() {
        use reqwest::dns::Resolve;
        use tower::Service;
        let name: hyper_util::client::legacy::connect::dns::Name =
            "localhost".parse().expect("name");
        let mut hyper = PolicyResolver::new(NetPolicy::nodes(
            &parse_networks("10.0.0.0/8").expect("nets"),
        ));
        let e = hyper.call(name).await.expect_err("loopback only");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        let mut hyper = PolicyResolver::new(NetPolicy::nodes(&[]));
        let name: hyper_util::client::legacy::connect::dns::Name =
            "localhost".parse().expect("name");
        assert!(
            hyper
                .call(name)
                .await
                .expect("allowed")
                .all(|a| a.ip().is_loopback())
        );

        let rq = ReqwestResolver::new(NetPolicy::webhooks(&[]));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(rq.resolve(name).await.is_err());
        let rq = ReqwestResolver::new(NetPolicy::webhooks(
            &parse_networks("127.0.0.0/8,::1").expect("nets"),
        ));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(
            rq.resolve(name)
                .await
                .expect("allowed")
                .all(|a| a.ip().is_loopback())
        );
    }
}
