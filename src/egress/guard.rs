//! Which addresses the proxy never connects to: everything that is not the
//! public internet (the host itself, the cluster, the cloud's metadata
//! service), including IPv6 forms that carry such an IPv4 address, and the
//! ranges an operator adds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::Cidr;

/// Why an address is not reachable from a `semitrusted` container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forbidden {
    Unspecified,
    Loopback,
    /// RFC 1918 (IPv4).
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (and many clusters' pod networks).
    SharedAddressSpace,
    LinkLocal,
    /// 169.254.169.254 and fd00:ec2::254.
    CloudMetadata,
    Multicast,
    Broadcast,
    /// 0.0.0.0/8.
    ThisNetwork,
    /// 240.0.0.0/4, 192.0.0.0/24, 198.18.0.0/15, local-use NAT64.
    Reserved,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated, still routed by some stacks).
    SiteLocal,
    /// A range the operator denied.
    Denied(Cidr),
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unspecified => f.write_str("an unspecified address"),
            Self::Loopback => f.write_str("a loopback address"),
            Self::Private => f.write_str("a private address"),
            Self::SharedAddressSpace => f.write_str("a shared (carrier-grade NAT) address"),
            Self::LinkLocal => f.write_str("a link-local address"),
            Self::CloudMetadata => f.write_str("the cloud metadata address"),
            Self::Multicast => f.write_str("a multicast address"),
            Self::Broadcast => f.write_str("the broadcast address"),
            Self::ThisNetwork => f.write_str("a \"this network\" address"),
            Self::Reserved => f.write_str("a reserved address"),
            Self::UniqueLocal => f.write_str("a unique local address"),
            Self::SiteLocal => f.write_str("a site-local address"),
            Self::Denied(cidr) => write!(f, "in the denied range {cidr}"),
        }
    }
}

/// Whether `ip` is outside the public internet, and why. IPv6 addresses
/// that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 and
/// 6to4) are judged by that IPv4 address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    let forbidden = if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Forbidden::CloudMetadata
    } else if ip.is_unspecified() {
        Forbidden::Unspecified
    } else if ip.is_broadcast() {
        Forbidden::Broadcast
    } else if a == 0 {
        Forbidden::ThisNetwork
    } else if ip.is_loopback() {
        Forbidden::Loopback
    } else if ip.is_private() {
        Forbidden::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        Forbidden::SharedAddressSpace
    } else if ip.is_link_local() {
        Forbidden::LinkLocal
    } else if ip.is_multicast() {
        Forbidden::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        Forbidden::Reserved
    } else {
        return None;
    };
    Some(forbidden)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let s = ip.segments();
    let forbidden = if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Forbidden::CloudMetadata
    } else if ip.is_unspecified() {
        Forbidden::Unspecified
    } else if ip.is_loopback() {
        Forbidden::Loopback
    } else if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): translated by the
        // site itself, to whatever it chooses.
        Forbidden::Reserved
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Forbidden::UniqueLocal
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Forbidden::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Forbidden::SiteLocal
    } else if ip.is_multicast() {
        Forbidden::Multicast
    } else {
        return None;
    };
    Some(forbidden)
}

/// The IPv4 address an IPv6 address stands for, if any: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped_or_compatible = s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped_or_compatible || nat64 {
        Some(low())
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

/// The address check the proxy applies to every resolved address.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    deny: Vec<Cidr>,
    /// Lets loopback through, so unit tests can stand up upstreams on
    /// 127.0.0.1. Absent from every other build.
    #[cfg(test)]
    pub(super) allow_loopback: bool,
}

impl Guard {
    /// The built-in rules plus the operator's denied ranges.
    pub fn new(deny: Vec<Cidr>) -> Self {
        Self {
            deny,
            #[cfg(test)]
            allow_loopback: false,
        }
    }

    /// `Err` with the reason when the proxy must not connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for candidate in [Some(ip), v4].into_iter().flatten() {
            if let Some(cidr) = self.deny.iter().find(|c| c.contains(candidate)) {
                return Err(Forbidden::Denied(*cidr));
            }
        }
        match classify(ip) {
            #[cfg(test)]
            Some(Forbidden::Loopback) if self.allow_loopback => Ok(()),
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<Forbidden> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_non_public_range_is_forbidden_with_its_reason() {
        use Forbidden::*;
        for (addr, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.254", SharedAddressSpace),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.1", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::10.0.0.1", Private),
            ("::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", CloudMetadata),
            ("64:ff9b::192.168.0.1", Private),
            ("64:ff9b:1::1", Reserved),
            ("2002:0a00:0001::1", Private),
            ("2002:7f00:0001::1", Loopback),
            ("2002:a9fe:a9fe::", CloudMetadata),
        ] {
            assert_eq!(class(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn public_and_documentation_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.2",
            "198.17.255.255",
            "198.20.0.1",
            "169.253.1.1",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:203.0.113.2",
            "64:ff9b::1.1.1.1",
            "2002:cb00:7102::1",
            "fbff::1",
        ] {
            assert_eq!(class(addr), None, "{addr}");
        }
    }

    #[test]
    fn denied_ranges_cover_ipv6_forms_of_their_addresses() {
        let guard = Guard::new(vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
        ]);
        let check = |s: &str| guard.check(s.parse().unwrap());
        assert_eq!(
            check("203.0.113.9"),
            Err(Forbidden::Denied("203.0.113.0/24".parse().unwrap()))
        );
        assert!(check("::ffff:203.0.113.9").is_err(), "IPv4-mapped");
        assert!(check("2002:cb00:7109::1").is_err(), "6to4");
        assert!(check("2001:db8:1:ff::1").is_err());
        assert!(check("2001:db8:2::1").is_ok());
        assert!(check("192.0.2.7").is_err());
        assert!(check("192.0.2.8").is_ok());
        assert!(check("198.51.100.1").is_ok());
        assert_eq!(check("10.0.0.1"), Err(Forbidden::Private), "built-ins stay");
        assert_eq!(
            check("203.0.113.9").unwrap_err().to_string(),
            "in the denied range 203.0.113.0/24"
        );
    }

    #[test]
    fn the_test_escape_admits_loopback_only() {
        let mut guard = Guard::new(vec![]);
        guard.allow_loopback = true;
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("::1".parse().unwrap()).is_ok());
        assert!(guard.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(guard.check("169.254.169.254".parse().unwrap()).is_err());
    }
}
