//! Equality label selectors kept as maps (a pool's `nodeSelector`, the
//! agent's node label): matched and printed by kube's `Selector`, so the
//! agent, the controller and the API server agree on what a selector means.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

fn selector(map: &BTreeMap<String, String>) -> Selector {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Whether `labels` satisfy every `key=value` of `selector` (an empty
/// selector selects everything).
pub fn selects(selector_map: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector(selector_map).matches(labels)
}

/// The selector in the API's string form (`k=v,k2=v2`), for list and watch
/// requests and for messages.
pub fn to_string(selector_map: &BTreeMap<String, String>) -> String {
    selector(selector_map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching_and_printing() {
        let sel = map(&[("unsandbox.com/lxd", "true"), ("tier", "fast")]);
        assert!(selects(
            &sel,
            &map(&[("unsandbox.com/lxd", "true"), ("tier", "fast"), ("x", "y")])
        ));
        assert!(!selects(&sel, &map(&[("unsandbox.com/lxd", "true")])));
        assert!(!selects(
            &sel,
            &map(&[("unsandbox.com/lxd", "false"), ("tier", "fast")])
        ));
        assert!(selects(&BTreeMap::new(), &BTreeMap::new()));
        assert_eq!(to_string(&sel), "tier=fast,unsandbox.com/lxd=true");
        assert_eq!(to_string(&BTreeMap::new()), "");
    }
}
