//! Why the proxy did not serve a request, and how that reads: in the
//! status line (what `curl` and Python's `http.client` print), in a
//! plain-text body, in a header for programs, in the execution's record
//! and in the metrics.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::ext::ReasonPhrase;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::ProxyBody;
use super::guard::Forbidden;
use super::metrics::Outcome;
use super::record::BudgetKind;
use super::target::Target;

/// Names the refusal in a response, for programs: `not_allowed`,
/// `ip_literal`, `forbidden_address`, `connection_budget`, `byte_budget`
/// (403s).
pub const DENIED_HEADER: &str = "x-unsandbox-egress-denied";
/// Names a failure that is not a refusal: `unresolved`,
/// `upstream_failed` (502s), `bad_request` (400s).
pub const ERROR_HEADER: &str = "x-unsandbox-egress-error";

/// A request the proxy did not serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No rule of the pool admits the host and port.
    NotAllowed,
    /// The host is an IP address (a rule admitted it; rules hold names).
    IpLiteral,
    /// The name resolves to an address outside the public internet.
    ForbiddenAddress {
        addr: std::net::IpAddr,
        why: Forbidden,
    },
    /// The name has no address.
    Unresolved(String),
    /// The execution used its budget.
    Budget(BudgetKind),
    /// No checked address accepted a connection.
    UpstreamFailed(String),
    /// Not a request a forward proxy serves.
    BadRequest(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unresolved(_) | Self::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The short code of the response header.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::IpLiteral => "ip_literal",
            Self::ForbiddenAddress { .. } => "forbidden_address",
            Self::Unresolved(_) => "unresolved",
            Self::Budget(BudgetKind::Connections) => "connection_budget",
            Self::Budget(BudgetKind::Bytes) => "byte_budget",
            Self::UpstreamFailed(_) => "upstream_failed",
            Self::BadRequest(_) => "bad_request",
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NotAllowed | Self::IpLiteral => Outcome::NotAllowed,
            Self::ForbiddenAddress { .. } => Outcome::ForbiddenAddress,
            Self::Unresolved(_) => Outcome::Unresolved,
            Self::Budget(_) => Outcome::Budget,
            Self::UpstreamFailed(_) => Outcome::UpstreamFailed,
            Self::BadRequest(_) => Outcome::BadRequest,
        }
    }

    /// The reason as the execution's record lists it, after the host.
    pub fn reason(&self) -> String {
        match self {
            Self::NotAllowed => "not in this pool's allowlist".into(),
            Self::IpLiteral => "an IP address; the allowlist holds names only".into(),
            Self::ForbiddenAddress { addr, why } => format!("resolves to {addr}, {why}"),
            Self::Unresolved(e) => format!("does not resolve: {e}"),
            Self::Budget(kind) => format!("{kind} budget exceeded"),
            Self::UpstreamFailed(e) => format!("could not be reached: {e}"),
            Self::BadRequest(e) => e.clone(),
        }
    }

    /// The whole sentence: what the status line and the body say.
    pub fn sentence(&self, target: Option<&Target>) -> String {
        let verb = match self {
            Self::NotAllowed | Self::IpLiteral => "is ",
            Self::Budget(_) => "refused: ",
            _ => "",
        };
        match (self, target) {
            (Self::BadRequest(_), _) | (_, None) => format!("unsandbox egress: {}", self.reason()),
            (_, Some(t)) => format!("unsandbox egress: {t} {verb}{}", self.reason()),
        }
    }

    /// The response the program gets.
    pub fn response(&self, target: Option<&Target>) -> Response<ProxyBody> {
        let sentence = self.sentence(target);
        let body = Full::new(Bytes::from(format!("{sentence}\n")))
            .map_err(|never| match never {})
            .boxed();
        let mut res = Response::new(body);
        *res.status_mut() = self.status();
        let header = if self.status() == StatusCode::FORBIDDEN {
            DENIED_HEADER
        } else {
            ERROR_HEADER
        };
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header, HeaderValue::from_static(self.code()));
        // A sentence with a byte a status line cannot carry keeps the
        // standard phrase; the body still says it.
        if let Ok(phrase) = ReasonPhrase::try_from(sentence) {
            res.extensions_mut().insert(phrase);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_the_target_and_the_reason() {
        let t = Target {
            host: "denied.test".into(),
            port: 443,
        };
        assert_eq!(
            Refusal::NotAllowed.sentence(Some(&t)),
            "unsandbox egress: denied.test:443 is not in this pool's allowlist"
        );
        let private = Refusal::ForbiddenAddress {
            addr: "10.0.0.5".parse().unwrap(),
            why: Forbidden::Private,
        };
        assert_eq!(
            private.sentence(Some(&t)),
            "unsandbox egress: denied.test:443 resolves to 10.0.0.5, a private address"
        );
        assert_eq!(
            Refusal::Budget(BudgetKind::Bytes).sentence(Some(&t)),
            "unsandbox egress: denied.test:443 refused: byte budget exceeded"
        );
        assert_eq!(
            Refusal::Budget(BudgetKind::Connections).reason(),
            "connection budget exceeded"
        );
        let res = Refusal::NotAllowed.response(Some(&t));
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers()[DENIED_HEADER], "not_allowed");
        assert_eq!(
            res.extensions().get::<ReasonPhrase>().unwrap().as_bytes(),
            b"unsandbox egress: denied.test:443 is not in this pool's allowlist"
        );
        let res = Refusal::UpstreamFailed("refused".into()).response(Some(&t));
        assert_eq!(res.status(), 502);
        assert_eq!(res.headers()[ERROR_HEADER], "upstream_failed");
        let res = Refusal::BadRequest("bad\u{7f}".into()).response(None);
        assert_eq!(res.status(), 400);
        assert!(
            res.extensions().get::<ReasonPhrase>().is_none(),
            "a control byte never reaches the status line"
        );
    }
}
