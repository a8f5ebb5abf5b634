//! Peer agents that can run an execution this node cannot run right now,
//! found from the pools' status entries. Pure over the stores.

use crate::crd::{ExecutorPool, LanguageImage, NetworkTier};

/// A peer that reports warm containers for a language and tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub endpoint: String,
    pub warm: u32,
}

/// Peers other than `me` that serve `language` with `tier`, most warm first.
pub fn candidates(
    pools: &[ExecutorPool],
    images: &[LanguageImage],
    language: &str,
    tier: NetworkTier,
    me: &str,
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
            if e.node == me || e.warm == 0 {
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

/// Peers from the agent's watch stores.
pub struct StorePeers {
    pub stores: super::source::Stores,
    pub node: String,
}

impl crate::api::forward::PeerFinder for StorePeers {
    fn candidates(&self, language: &str, tier: NetworkTier) -> Vec<Peer> {
        let pools: Vec<ExecutorPool> = self
            .stores
            .pools
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let images: Vec<LanguageImage> = self
            .stores
            .images
            .state()
            .iter()
            .map(|i| (**i).clone())
            .collect();
        candidates(&pools, &images, language, tier, &self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_with_warm_containers_for_the_language_most_warm_first() {
        let image: LanguageImage = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, aliases: [py], sourceFile: main.py, run: python3 main.py}]\n",
        )
        .unwrap();
        let pool: ExecutorPool = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: p, namespace: t}\nspec: {image: small}\nstatus:\n  nodes:\n  - {node: me, desired: 2, warm: 5, busy: 0, launching: 0, ready: true, endpoint: 'http://10.0.0.1:8080'}\n  - {node: b, desired: 2, warm: 1, busy: 0, launching: 0, ready: true, endpoint: 'http://10.0.0.2:8080'}\n  - {node: c, desired: 2, warm: 3, busy: 0, launching: 0, ready: true, endpoint: 'http://10.0.0.3:8080'}\n  - {node: d, desired: 2, warm: 0, busy: 2, launching: 0, ready: true, endpoint: 'http://10.0.0.4:8080'}\n  - {node: e, desired: 2, warm: 4, busy: 0, launching: 0, ready: true}\n",
        )
        .unwrap();
        let peers = candidates(
            std::slice::from_ref(&pool),
            std::slice::from_ref(&image),
            "py",
            NetworkTier::Zerotrust,
            "me",
        );
        let nodes: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(nodes, ["c", "b"]);
        assert!(
            candidates(
                std::slice::from_ref(&pool),
                std::slice::from_ref(&image),
                "ruby",
                NetworkTier::Zerotrust,
                "me"
            )
            .is_empty()
        );
        assert!(candidates(&[pool], &[image], "py", NetworkTier::Semitrusted, "me").is_empty());
    }
}
