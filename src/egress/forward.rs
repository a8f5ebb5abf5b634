//! A plain HTTP request (`GET http://host/path`) forwarded over the
//! connection the proxy opened to a checked address, with bodies counted
//! both ways.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{Instrument, debug};

use super::account::Meter;
use super::body::{Counted, ProxyBody};
use super::record::{BudgetKind, Direction};
use super::refusal::Refusal;
use super::target::Target;

/// Sends `req` to `target` over `stream` and answers with the host's
/// response.
pub async fn forward(
    req: Request<Incoming>,
    target: &Target,
    stream: TcpStream,
    meter: Meter,
) -> Result<Response<ProxyBody>, Refusal> {
    let failed = |e: hyper::Error| Refusal::UpstreamFailed(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let cut = meter.account.cut.clone();
    let driver = async move {
        tokio::select! {
            r = connection => if let Err(e) = r { debug!(error = %e, "upstream connection ended") },
            () = cut.cancelled() => {}
        }
    };
    tokio::spawn(driver.in_current_span());

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The admitted host, whatever Host the program sent.
    let host = HeaderValue::from_str(&target.host_header())
        .map_err(|_| Refusal::BadRequest("a host that cannot be a Host header".into()))?;
    parts.headers.insert(header::HOST, host);
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = path
        .parse::<Uri>()
        .map_err(|e| Refusal::BadRequest(e.to_string()))?;
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let request = Request::from_parts(parts, Counted::new(body, meter.clone(), Direction::Sent));

    let account = meter.account.clone();
    let response = sender.send_request(request).await.map_err(|e| {
        if account.bytes_exceeded() {
            Refusal::Budget(BudgetKind::Bytes)
        } else {
            failed(e)
        }
    })?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let reason = parts.extensions.remove::<ReasonPhrase>();
    parts.extensions = Default::default();
    if let Some(reason) = reason {
        parts.extensions.insert(reason);
    }
    let body = Counted::new(body, meter, Direction::Received).boxed();
    Ok(Response::from_parts(parts, body))
}

/// Removes what belongs to one hop: the headers `Connection` names, the
/// standard hop-by-hop headers, and every `Proxy-*` header (the proxy's
/// credentials never travel on).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    let standard = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    for name in named.into_iter().chain(proxy).chain(standard) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("authorization", "Bearer kept"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-length", "x-kept"]);
    }
}
