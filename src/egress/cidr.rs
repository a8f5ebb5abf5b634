//! Address ranges as operators write them (`10.0.0.0/8`, `fd00::/8`).

use std::fmt;
use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is the
/// range of that one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A range that does not parse, with why.
#[derive(Debug, thiserror::Error)]
#[error("invalid address range {text:?}: {why}")]
pub struct CidrError {
    text: String,
    why: &'static str,
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let err = |why| CidrError {
            text: text.to_string(),
            why,
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or(err("the prefix length is not a number within the address"))?,
            None => max,
        };
        let cidr = Cidr { network, prefix };
        if bits(network) & !mask(max, prefix) != 0 {
            return Err(err("host bits are set after the prefix"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(width: u8, prefix: u8) -> u128 {
    let all = if width == 32 {
        u32::MAX as u128
    } else {
        u128::MAX
    };
    if prefix == 0 {
        0
    } else {
        all & (all << (width - prefix))
    }
}

impl Cidr {
    /// Whether `ip` is in this range (an IPv4 range holds IPv4 addresses
    /// only; the guard checks IPv6 forms of them too).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let width = match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) => 32,
            (IpAddr::V6(_), IpAddr::V6(_)) => 128,
            _ => return false,
        };
        let m = mask(width, self.prefix);
        bits(ip) & m == bits(self.network) & m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_strictly_and_keep_families_apart() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()), "families do not mix");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8:1::/48".parse().unwrap();
        assert!(v6.contains("2001:db8:1:ff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:2::1".parse().unwrap()));
    }
}
