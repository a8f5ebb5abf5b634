//! What this host should run: the pools that cover it, each resolved against
//! its LanguageImage, with the reason when a pool cannot be served. Pure.

use std::collections::BTreeMap;

use crate::crd::{
    ExecutorPool, ExecutorPoolSpec, LanguageImage, LanguageImageSpec, pool_problem, validate,
};

/// Why a pool is not served on this host: decided by
/// [`crate::crd::problems::pool_problem`], as on the controller, or by the
/// host itself (its image could not be fetched).
pub use crate::crd::Problem;

/// The resources an agent works from, whatever their source (files or the API server).
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub pools: Vec<ExecutorPool>,
    pub images: Vec<LanguageImage>,
    /// Labels of this node, matched against pools' node selectors. `None`
    /// (standalone): every pool covers this host.
    pub node_labels: Option<BTreeMap<String, String>>,
    /// Whether this is a complete listing (files loaded, or every watch has
    /// listed once). Until it is, an empty list means "not known yet", not
    /// "none": the agent decides nothing, so a restart cannot mistake its
    /// warm containers for leftovers. `Default` is incomplete.
    pub complete: bool,
}

impl Resources {
    /// A complete listing of exactly these resources.
    pub fn listed(
        pools: Vec<ExecutorPool>,
        images: Vec<LanguageImage>,
        node_labels: Option<BTreeMap<String, String>>,
    ) -> Self {
        Self {
            pools,
            images,
            node_labels,
            complete: true,
        }
    }
}

/// One pool as this host sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPool {
    /// `namespace/name`.
    pub key: String,
    pub name: String,
    pub generation: Option<i64>,
    pub spec: ExecutorPoolSpec,
    /// Warm containers wanted on this host.
    pub warm: u32,
    /// The image spec, when the named LanguageImage exists and is valid.
    pub image: Option<LanguageImageSpec>,
    /// Set when the pool cannot be served here.
    pub problem: Option<Problem>,
}

impl ResolvedPool {
    pub fn servable(&self) -> bool {
        self.problem.is_none() && self.image.is_some()
    }
}

/// `namespace/name` of a pool (namespace `default` when none is set).
pub fn pool_key(pool: &ExecutorPool) -> String {
    let ns = pool.metadata.namespace.as_deref().unwrap_or("default");
    format!("{ns}/{}", pool.metadata.name.as_deref().unwrap_or_default())
}

/// Whether a node with these labels is covered by the pool's node selector.
/// `None` (standalone) is covered by every pool.
pub fn covers(spec: &ExecutorPoolSpec, node_labels: Option<&BTreeMap<String, String>>) -> bool {
    match node_labels {
        None => true,
        Some(labels) => crate::crd::labels::selects(&spec.node_selector, labels),
    }
}

/// Resolves every pool that covers `node`, sorted by key.
pub fn resolve(res: &Resources, node: &str) -> Vec<ResolvedPool> {
    let mut out: Vec<ResolvedPool> = res
        .pools
        .iter()
        .filter(|p| covers(&p.spec, res.node_labels.as_ref()))
        .map(|p| resolve_one(p, &res.images, node))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn resolve_one(pool: &ExecutorPool, images: &[LanguageImage], node: &str) -> ResolvedPool {
    let spec = pool.spec.clone();
    let found = images
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(spec.image.as_str()));
    let problem = pool_problem(&spec, found);
    let image = found
        .filter(|li| validate::image(&li.spec).is_ok())
        .map(|li| li.spec.clone());
    ResolvedPool {
        key: pool_key(pool),
        name: pool.metadata.name.clone().unwrap_or_default(),
        generation: pool.metadata.generation,
        warm: spec.warm_for(node),
        spec,
        image,
        problem,
    }
}

/// A stable hash of what shapes a pool's containers: a container whose hash
/// differs from its pool's current one is replaced.
pub fn container_hash(spec: &ExecutorPoolSpec, fingerprint: &str) -> String {
    let mut shape = serde_json::json!({
        "fingerprint": fingerprint,
        "limits": spec.limits,
        "network": spec.network,
    });
    // A recycling container is readied with its first sandbox (the key is
    // only there then, so single-use containers keep their hash).
    if spec.recycles() {
        shape["recycles"] = true.into();
    }
    format!(
        "{:016x}",
        super::keys::stable_hash(shape.to_string().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Reason;

    fn docs(yaml: &str) -> Resources {
        let mut res = Resources::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("ExecutorPool") => res.pools.push(serde_yaml::from_value(v).unwrap()),
                Some("LanguageImage") => res.images.push(serde_yaml::from_value(v).unwrap()),
                _ => panic!("unknown doc"),
            }
        }
        res
    }
    use serde::Deserialize;

    const IMAGE: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages:\n  - {name: python, sourceFile: main.py, run: python3 main.py}\n";

    #[test]
    fn resolves_pool_against_image() {
        let res = docs(&format!(
            "{IMAGE}---\napiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: py, namespace: team}}\nspec:\n  image: small\n  warm: 3\n  nodeOverrides: [{{node: big, warm: 9}}]\n"
        ));
        let r = resolve(&res, "n1");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key, "team/py");
        assert_eq!(r[0].warm, 3);
        assert!(r[0].servable());
        assert_eq!(resolve(&res, "big")[0].warm, 9);
    }

    #[test]
    fn problems_are_reported_not_served() {
        let res = docs(&format!(
            "{IMAGE}---\nkind: ExecutorPool\nmetadata: {{name: a}}\nspec: {{image: nope}}\n---\nkind: ExecutorPool\nmetadata: {{name: b}}\nspec: {{image: small, egress: {{allow: [{{host: a.org}}]}}}}\n---\nkind: ExecutorPool\nmetadata: {{name: c}}\nspec:\n  image: small\n  execution: {{outputBytes: {{default: 10, max: 5}}}}\n"
        ));
        let r = resolve(&res, "n1");
        let reasons: Vec<_> = r
            .iter()
            .map(|p| p.problem.as_ref().unwrap().reason)
            .collect();
        assert_eq!(
            reasons,
            [
                Reason::ImageNotFound,
                Reason::InvalidSpec,
                Reason::InvalidSpec
            ]
        );
        assert!(r.iter().all(|p| !p.servable()));
        assert_eq!(r[0].key, "default/a");
    }

    #[test]
    fn node_selector_filters() {
        let res = docs(&format!(
            "{IMAGE}---\nkind: ExecutorPool\nmetadata: {{name: a}}\nspec: {{image: small, nodeSelector: {{lxd: 'yes'}}}}\n"
        ));
        let mut res = res;
        res.node_labels = Some(BTreeMap::from([("lxd".to_string(), "yes".to_string())]));
        assert_eq!(resolve(&res, "n").len(), 1);
        res.node_labels = Some(BTreeMap::new());
        assert_eq!(resolve(&res, "n").len(), 0);
        res.node_labels = None;
        assert_eq!(resolve(&res, "n").len(), 1);
    }

    #[test]
    fn hash_changes_with_shape_only() {
        let res = docs(&format!(
            "{IMAGE}---\nkind: ExecutorPool\nmetadata: {{name: a}}\nspec: {{image: small}}\n"
        ));
        let mut spec = res.pools[0].spec.clone();
        let h = container_hash(&spec, "abc");
        spec.warm = 7;
        assert_eq!(h, container_hash(&spec, "abc"));
        spec.limits.memory_mib = 512;
        assert_ne!(h, container_hash(&spec, "abc"));
        assert_ne!(h, container_hash(&res.pools[0].spec, "abd"));
    }
}
