//! What a request asks the proxy for: a `CONNECT` tunnel or an HTTP
//! request to forward, and to which host and port. Pure: reads the method
//! and the URI hyper parsed.

use std::fmt;
use std::net::IpAddr;

use hyper::{Method, Uri};

use super::resolve::normalize;

/// How the proxy serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `CONNECT host:port`: a byte tunnel (HTTPS, or anything else).
    Tunnel,
    /// `METHOD http://host[:port]/path`: one HTTP request forwarded.
    Forward,
}

/// The host (normalized: lowercase, no trailing dot, no brackets) and
/// port a request is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// The address the host names itself, when it is an IP literal.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header for a forwarded request.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The mode and target of a request, or why the proxy cannot serve it.
pub fn parse(method: &Method, uri: &Uri) -> Result<(Mode, Target), (String, Option<Target>)> {
    let host_of = |host: &str| normalize(host.trim_start_matches('[').trim_end_matches(']'));
    if method == Method::CONNECT {
        let Some(authority) = uri.authority() else {
            return Err(("CONNECT needs a host:port target".into(), None));
        };
        let host = host_of(authority.host());
        let Some(port) = authority.port_u16() else {
            return Err((format!("CONNECT {host} has no port"), None));
        };
        return valid(Mode::Tunnel, Target { host, port });
    }
    let Some(host) = uri.host() else {
        return Err((
            "this is a forward proxy: send absolute URIs (http://host/path), or CONNECT for HTTPS"
                .into(),
            None,
        ));
    };
    let port = uri.port_u16();
    match uri.scheme_str() {
        Some("http") => valid(
            Mode::Forward,
            Target {
                host: host_of(host),
                port: port.unwrap_or(80),
            },
        ),
        Some("https") => Err((
            "https:// URIs go through CONNECT (set HTTPS_PROXY), not as a plain request".into(),
            Some(Target {
                host: host_of(host),
                port: port.unwrap_or(443),
            }),
        )),
        scheme => Err((
            format!(
                "the scheme {:?} is not proxied; only http",
                scheme.unwrap_or("")
            ),
            None,
        )),
    }
}

fn valid(mode: Mode, target: Target) -> Result<(Mode, Target), (String, Option<Target>)> {
    if target.host.is_empty() || target.port == 0 {
        return Err(("an empty host or port 0".into(), None));
    }
    Ok((mode, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, uri: &str) -> Result<(Mode, Target), String> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        parse(&method, &uri.parse().unwrap()).map_err(|(why, _)| why)
    }

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn connect_and_absolute_uris_name_their_target() {
        assert_eq!(
            p("CONNECT", "Allowed.Test.:443"),
            Ok((Mode::Tunnel, t("allowed.test", 443)))
        );
        assert_eq!(
            p("CONNECT", "[2001:db8::1]:443"),
            Ok((Mode::Tunnel, t("2001:db8::1", 443)))
        );
        assert_eq!(
            p("GET", "http://example.test/a?b=c"),
            Ok((Mode::Forward, t("example.test", 80)))
        );
        assert_eq!(
            p("POST", "http://user@EXAMPLE.test:8080/"),
            Ok((Mode::Forward, t("example.test", 8080)))
        );
        assert_eq!(t("2001:db8::1", 443).to_string(), "[2001:db8::1]:443");
        assert_eq!(t("a.test", 80).host_header(), "a.test");
        assert_eq!(t("a.test", 8080).host_header(), "a.test:8080");
        assert_eq!(
            t("1.2.3.4", 80).ip_literal(),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(t("a.test", 80).ip_literal(), None);
    }

    #[test]
    fn what_a_proxy_cannot_serve_is_a_bad_request() {
        let https = p("GET", "https://example.test/").unwrap_err();
        assert!(https.contains("CONNECT"), "{https}");
        let origin = p("GET", "/index.html").unwrap_err();
        assert!(origin.contains("absolute URIs"), "{origin}");
        assert!(p("GET", "ftp://example.test/").is_err());
        assert!(p("CONNECT", "example.test:0").is_err());
    }
}
