//! Peer agents that can run an execution this node cannot run right now,
//! found from the pools' status entries. Pure over the stores. An entry
//! whose agent stopped confirming it (stale heartbeat) gets no requests:
//! its warm count is from before the agent went silent.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::controller::heartbeat::{DEFAULT_STALE_AFTER, freshness};
use crate::crd::{ExecutorPool, LanguageImage, NetworkTier};

/// A peer that reports warm containers for a language and tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's node name.
    pub node: String,
    /// Base URL of its execution API.
    pub endpoint: String,
    /// Warm containers it reports for the language and tier.
    pub warm: u32,
}

/// Finds peers for a language and tier. The API's forwarder asks one of
/// these; the cluster answers from its stores, and tests with fixed peers.
pub trait PeerFinder: Send + Sync {
    fn candidates(&self, language: &str, tier: NetworkTier) -> Vec<Peer>;
    /// The API endpoint of `node`'s agent while it confirms its status
    /// entries (ready or draining); `None` once it is gone.
    fn endpoint(&self, node: &str) -> Option<String>;
}

/// When an entry counts as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The current time.
    pub now: Timestamp,
    /// Entries without a heartbeat within this long are skipped.
    pub stale_after: Duration,
}

/// Peers other than `me` that serve `language` with `tier` and confirmed
/// their entry recently, most warm first.
pub fn candidates(
    pools: &[ExecutorPool],
    images: &[LanguageImage],
    language: &str,
    tier: NetworkTier,
    me: &str,
    live: Liveness,
) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for pool in pools
        .iter()
        .filter(|p| p.spec.network == tier && p.metadata.deletion_timestamp.is_none())
    {
        let Some(image) = images
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(pool.spec.image.as_str()))
        else {
            continue;
        };
        if !image.spec.languages.iter().any(|l| l.answers_to(language)) {
            continue;
        }
        for e in pool.status.iter().flat_map(|s| &s.nodes) {
            let Some(endpoint) = &e.endpoint else {
                continue;
            };
            // A node that is not ready (draining, or not proven yet) takes
            // nothing forwarded.
            if e.node == me
                || e.warm == 0
                || !e.ready
                || !freshness(e, live.now, live.stale_after).is_fresh()
            {
                continue;
            }
            match out.iter_mut().find(|p| p.node == e.node) {
                Some(p) => p.warm += e.warm,
                None => out.push(Peer {
                    node: e.node.clone(),
                    endpoint: endpoint.clone(),
                    warm: e.warm,
                }),
            }
        }
    }
    out.sort_by(|a, b| b.warm.cmp(&a.warm).then_with(|| a.node.cmp(&b.node)));
    out
}

/// The endpoint of `node`'s agent, from any of its status entries that is
/// fresh, ready or not (a draining agent still answers for what it holds).
pub fn endpoint_of(pools: &[ExecutorPool], node: &str, live: Liveness) -> Option<String> {
    pools
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| &s.nodes))
        .filter(|e| e.node == node && freshness(e, live.now, live.stale_after).is_fresh())
        .find_map(|e| e.endpoint.clone())
}

/// Peers from the agent's watch stores, with stale entries skipped.
pub struct StorePeers {
    /// The agent's watch stores.
    pub stores: super::source::Stores,
    /// This node's name (never its own peer).
    pub node: String,
    /// Entries without a heartbeat for this long get no requests.
    pub stale_after: Duration,
}

impl StorePeers {
    /// Peers of `node` from `stores`, stale after [`DEFAULT_STALE_AFTER`].
    pub fn new(stores: super::source::Stores, node: String) -> Self {
        Self {
            stores,
            node,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

impl StorePeers {
    /// The pools in the watch store now.
    fn pools(&self) -> Vec<ExecutorPool> {
        self.stores
            .pools
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect()
    }

    /// Freshness as of now.
    fn live(&self) -> Liveness {
        Liveness {
            now: Timestamp::now(),
            stale_after: self.stale_after,
        }
    }
}

impl PeerFinder for StorePeers {
    fn candidates(&self, language: &str, tier: NetworkTier) -> Vec<Peer> {
        let pools = self.pools();
        let images: Vec<LanguageImage> = self
            .stores
            .images
            .state()
            .iter()
            .map(|i| (**i).clone())
            .collect();
        candidates(&pools, &images, language, tier, &self.node, self.live())
    }

    fn endpoint(&self, node: &str) -> Option<String> {
        endpoint_of(&self.pools(), node, self.live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeats in the fixture are at 1 000 000 s; "now" is 10 s later.
    fn live() -> Liveness {
        Liveness {
            now: Timestamp::from_second(1_000_010).unwrap(),
            stale_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn peers_with_warm_containers_for_the_language_most_warm_first() {
        let image: LanguageImage = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, aliases: [py], sourceFile: main.py, run: python3 main.py}]\n",
        )
        .unwrap();
        let pool: ExecutorPool = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: p, namespace: t}\nspec: {image: small}\nstatus:\n  nodes:\n  - {node: me, desired: 2, warm: 5, busy: 0, launching: 0, ready: true, heartbeatTime: '1970-01-12T13:46:40Z', endpoint: 'http://10.0.0.1:8080'}\n  - {node: b, desired: 2, warm: 1, busy: 0, launching: 0, ready: true, heartbeatTime: '1970-01-12T13:46:40Z', endpoint: 'http://10.0.0.2:8080'}\n  - {node: c, desired: 2, warm: 3, busy: 0, launching: 0, ready: true, heartbeatTime: '1970-01-12T13:46:40Z', endpoint: 'http://10.0.0.3:8080'}\n  - {node: d, desired: 2, warm: 0, busy: 2, launching: 0, ready: true, heartbeatTime: '1970-01-12T13:46:40Z', endpoint: 'http://10.0.0.4:8080'}\n  - {node: e, desired: 2, warm: 4, busy: 0, launching: 0, ready: true}\n  - {node: f, desired: 2, warm: 9, busy: 0, launching: 0, ready: true, heartbeatTime: '1970-01-12T13:45:00Z', endpoint: 'http://10.0.0.6:8080'}\n  - {node: g, desired: 2, warm: 9, busy: 0, launching: 0, ready: true, endpoint: 'http://10.0.0.7:8080'}\n  - {node: h, desired: 2, warm: 9, busy: 0, launching: 0, ready: false, message: draining, heartbeatTime: '1970-01-12T13:46:40Z', endpoint: 'http://10.0.0.8:8080'}\n",
        )
        .unwrap();
        let peers = candidates(
            std::slice::from_ref(&pool),
            std::slice::from_ref(&image),
            "py",
            NetworkTier::Zerotrust,
            "me",
            live(),
        );
        // f's heartbeat is 110 s old and g has none, h drains: all skipped.
        let nodes: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(nodes, ["c", "b"]);
        // Jobs are found on a draining node, never on a silent one.
        let pools = std::slice::from_ref(&pool);
        let at = |node| endpoint_of(pools, node, live());
        assert_eq!(at("h").as_deref(), Some("http://10.0.0.8:8080"));
        assert_eq!(at("d").as_deref(), Some("http://10.0.0.4:8080"));
        assert_eq!((at("f"), at("g"), at("zz")), (None, None, None));
        assert!(
            candidates(
                std::slice::from_ref(&pool),
                std::slice::from_ref(&image),
                "ruby",
                NetworkTier::Zerotrust,
                "me",
                live()
            )
            .is_empty()
        );
        assert!(
            candidates(
                &[pool],
                &[image],
                "py",
                NetworkTier::Semitrusted,
                "me",
                live()
            )
            .is_empty()
        );
    }
}
