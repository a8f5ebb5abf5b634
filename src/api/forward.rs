//! Forwarding an execution to a peer agent that has a warm container when
//! this node has none. A forwarded request carries a header naming the
//! forwarding node, and a forwarded request is never forwarded again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::cluster::peers::Peer;
use crate::crd::NetworkTier;

use super::types::{ExecuteRequest, ExecuteResponse};

/// Header set on a forwarded request; its value is the forwarding node.
pub const FORWARDED_BY: &str = "x-unsandbox-forwarded-by";

/// Finds peers for a language and tier.
pub trait PeerFinder: Send + Sync {
    fn candidates(&self, language: &str, tier: NetworkTier) -> Vec<Peer>;
}

/// An HTTP client for peers.
#[derive(Clone)]
pub struct Forwarder {
    http: Client<HttpConnector, Full<Bytes>>,
    pub peers: Arc<dyn PeerFinder>,
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
        }
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
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header(FORWARDED_BY, me)
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
}
