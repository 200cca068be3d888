//! Where webhooks may go. An endpoint URL is chosen by whoever holds an admin key, and the
//! deliveries list reports status, error text and timing: without a filter it is a port
//! scanner inside Ordo's network (loopback, the cloud metadata service at 169.254.169.254,
//! private and ULA ranges). So an address that is not public is refused twice:
//!
//! - at registration ([`check_url`]): the host is resolved and every address checked;
//! - at connect time ([`GuardedResolver`], the webhook client's resolver, and
//!   [`check_literal`] for hosts written as an IP): the client connects only to addresses
//!   this module has checked, so a name that resolved to a public address at registration
//!   and to a private one later (DNS rebinding) is refused.
//!
//! `ORDO_WEBHOOK_ALLOW_PRIVATE=true` turns both off (tests and single-host setups whose
//! receivers run beside Ordo).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Whether a webhook may be sent to `ip`: a globally routable unicast address. Refused:
/// unspecified, loopback, private (RFC 1918), shared (CGNAT, RFC 6598), link-local, IETF
/// protocol, documentation, benchmarking, reserved, broadcast and multicast IPv4; and
/// unspecified, loopback, unique local (ULA), link-local, site-local, documentation,
/// discard, benchmarking, Teredo, local-use NAT64 and multicast IPv6, plus any IPv6 form
/// that embeds a refused IPv4 address (mapped, compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0                                 // "this network", 0.0.0.0/8
        || ip.is_loopback()                              // 127.0.0.0/8
        || ip.is_private()                               // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                            // 169.254/16 (cloud metadata)
        || (a == 100 && (64..128).contains(&b))          // 100.64/10, shared (CGNAT)
        || (a == 192 && b == 0 && c == 0)                // 192.0.0.0/24, IETF protocol
        || ip.is_documentation()                         // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a == 198 && (b == 18 || b == 19))            // 198.18/15, benchmarking
        || ip.is_multicast()                             // 224/4
        || a >= 240; // 240/4 reserved, and 255.255.255.255
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // ::/96, IPv4-compatible (deprecated) — also covers :: and ::1.
    if s[..6] == [0; 6] {
        return false;
    }
    // 64:ff9b::/96, NAT64: the embedded IPv4 address decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    // 2002::/16, 6to4: the IPv4 address in bits 16–47 decides.
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    let refused = ip.is_multicast()                      // ff00::/8
        || ip.is_unique_local()                          // fc00::/7
        || ip.is_unicast_link_local()                    // fe80::/10
        || (s[0] & 0xffc0) == 0xfec0                     // fec0::/10, site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)            // 2001:db8::/32, documentation
        || (s[0] == 0x3fff && s[1] < 0x1000)             // 3fff::/20, documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])      // 100::/64, discard
        || (s[0] == 0x2001 && s[1] == 0)                 // 2001::/32, Teredo
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0)    // 2001:2::/48, benchmarking
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1); // 64:ff9b:1::/48, local NAT64
    !refused
}

/// Why a webhook URL is refused, in words an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("`{host}` is not a valid URL host")]
    BadUrl { host: String },
    #[error("`{host}` resolves to {ip}, which is not a public address (loopback, private, link-local, ULA, multicast or reserved); set ORDO_WEBHOOK_ALLOW_PRIVATE=true to allow such receivers")]
    NotPublic { host: String, ip: IpAddr },
    #[error("`{host}` does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// At registration: `url`'s host, resolved, with every address public — unless
/// `allow_private`, when nothing is resolved or checked.
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), Refused> {
    if allow_private {
        return Ok(());
    }
    let parsed = Url::parse(url).map_err(|_| Refused::BadUrl { host: url.into() })?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    match parsed.host() {
        Some(Host::Ipv4(ip)) => check_ip(&ip.to_string(), IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => check_ip(&ip.to_string(), IpAddr::V6(ip)),
        Some(Host::Domain(name)) => resolve_checked(name, port).await.map(|_| ()),
        None => Err(Refused::BadUrl { host: url.into() }),
    }
}

/// At connect time, for a URL whose host is an IP address (which the client dials without
/// asking its resolver).
pub fn check_literal(url: &str, allow_private: bool) -> Result<(), Refused> {
    if allow_private {
        return Ok(());
    }
    match Url::parse(url).ok().as_ref().and_then(Url::host) {
        Some(Host::Ipv4(ip)) => check_ip(&ip.to_string(), IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => check_ip(&ip.to_string(), IpAddr::V6(ip)),
        _ => Ok(()),
    }
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), Refused> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(Refused::NotPublic {
            host: host.to_owned(),
            ip,
        })
    }
}

/// Resolve `name` and return its addresses, refusing them all if any one is not public (a
/// name that mixes public and private addresses is not a receiver to trust).
async fn resolve_checked(name: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| Refused::Unresolved {
            host: name.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Refused::Unresolved {
            host: name.to_owned(),
            reason: "no addresses".into(),
        });
    }
    for addr in &addrs {
        check_ip(name, addr.ip())?;
    }
    Ok(addrs)
}

/// The webhook client's resolver: the system's, with every answer checked by
/// [`is_public`] before the client may connect to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs = resolve_checked(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The webhook client with its egress policy: names resolve through [`GuardedResolver`],
/// and a URL whose host is an IP literal is checked before the request is built.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    /// `builder` finished with the guarded resolver (unless `allow_private`) and without
    /// proxies: through a proxy the client would never see the receiver's address, so the
    /// check could not hold.
    pub fn build(
        builder: reqwest::ClientBuilder,
        allow_private: bool,
    ) -> Result<Self, reqwest::Error> {
        let builder = if allow_private {
            builder
        } else {
            builder
                .no_proxy()
                .dns_resolver(std::sync::Arc::new(GuardedResolver))
        };
        Ok(Self {
            http: builder.build()?,
            allow_private,
        })
    }

    /// A POST to `url`, or why `url` may not be called.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, Refused> {
        check_literal(url, self.allow_private)?;
        Ok(self.http.post(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(ip: &str) -> bool {
        is_public(ip.parse().expect("an IP address"))
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass_including_the_edges_of_refused_ranges() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(public(ip), "{ip} should pass");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_is_refused() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
        ] {
            assert!(!public(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fbff::1",
        ] {
            assert!(public(ip), "{ip} should pass");
        }
    }

    #[test]
    fn literal_hosts_are_checked_unless_private_receivers_are_allowed() {
        assert!(check_literal("http://127.0.0.1:8080/hook", false).is_err());
        assert!(check_literal("http://[::1]/hook", false).is_err());
        assert!(check_literal("https://169.254.169.254/latest", false).is_err());
        assert!(check_literal("http://127.0.0.1:8080/hook", true).is_ok());
        // Names go through the resolver, not this check.
        assert!(check_literal("https://hooks.example.com/x", false).is_ok());
    }
}
