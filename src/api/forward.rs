//! Forwarding an execution to a peer agent that has a warm container when
//! this node has none. A forwarded request carries a header naming the
//! forwarding node, and a forwarded request is never forwarded again. With
//! an agent secret, the request is also signed with it (see `crate::auth`):
//! peers trust the header only with a valid agent signature.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use crate::auth::FORWARDED_BY;
use crate::auth::{AGENT_SIGNATURE, AgentKey, TIMESTAMP};
/// Peers come from the cluster's view of the pools; the forwarder only asks.
pub use crate::cluster::peers::{Peer, PeerFinder};

use super::types::{ExecuteRequest, ExecuteResponse};

/// An HTTP client for peers.
#[derive(Clone)]
pub struct Forwarder {
    http: Client<HttpConnector, Full<Bytes>>,
    pub peers: Arc<dyn PeerFinder>,
    /// Signs forwarded requests; peers with auth on refuse unsigned ones.
    agent_key: Option<AgentKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("peer {0}: {1}")]
    Failed(String, String),
}

impl Forwarder {
    pub fn new(peers: Arc<dyn PeerFinder>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            peers,
            agent_key: None,
        }
    }

    /// Signs every forwarded request with `key`'s agent secret.
    pub fn with_agent_key(mut self, key: AgentKey) -> Self {
        self.agent_key = Some(key);
        self
    }

    /// Runs the request on `peer`; only a successful execution counts.
    pub async fn execute(
        &self,
        peer: &Peer,
        language: &str,
        req: &ExecuteRequest,
        me: &str,
    ) -> Result<ExecuteResponse, ForwardError> {
        let fail = |m: String| ForwardError::Failed(peer.node.clone(), m);
        let body = serde_json::to_vec(req).map_err(|e| fail(e.to_string()))?;
        let url = format!("{}/execute/{language}", peer.endpoint.trim_end_matches('/'));
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| fail(e.to_string()))?;
        let mut request = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .header(FORWARDED_BY, me);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some((ts, sig)) = self
            .agent_key
            .as_ref()
            .and_then(|k| k.sign("POST", path, &body))
        {
            request = request.header(TIMESTAMP, ts).header(AGENT_SIGNATURE, sig);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.http.request(request))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))
    }

    /// Sends a bodiless `method` request for `path_and_query` to the peer at
    /// `endpoint`, signed as forwarded by `me`, and hands back its answer as
    /// it comes (a job's state or its events, held by that peer).
    pub async fn relay(
        &self,
        node: &str,
        endpoint: &str,
        method: hyper::Method,
        path_and_query: &str,
        me: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ForwardError> {
        let fail = |m: String| ForwardError::Failed(node.to_string(), m);
        let url = format!("{}{path_and_query}", endpoint.trim_end_matches('/'));
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| fail(e.to_string()))?;
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(FORWARDED_BY, me);
        if let Some((ts, sig)) = self
            .agent_key
            .as_ref()
            .and_then(|k| k.sign(method.as_str(), path_and_query, b""))
        {
            request = request.header(TIMESTAMP, ts).header(AGENT_SIGNATURE, sig);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| fail("no answer within 10s".into()))?
            .map_err(|e| fail(e.to_string()))
    }
}
