//! Which documents are served: the valid ones, and for each rejected one the
//! last good version of that pool or image, so a mistake in a file never
//! takes down what it used to describe. Pure.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::agent::Resources;
use crate::agent::desired::pool_key;
use crate::crd::{ExecutorPool, LanguageImage};

use super::files::{Document, Resource};

/// A document that is not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub file: PathBuf,
    /// Position in its file, from 0.
    pub document: usize,
    pub kind: &'static str,
    /// `namespace/name` of a pool, the name of an image (empty if unnamed).
    pub name: String,
    pub message: String,
    /// Whether the last good version is still served in its place.
    pub kept: bool,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} document {}: {} {}: {}",
            self.file.display(),
            self.document,
            self.kind,
            self.name,
            self.message
        )
    }
}

/// What to serve, and what was rejected.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub resources: Resources,
    pub rejected: Vec<Rejection>,
}

fn image_name(i: &LanguageImage) -> &str {
    i.metadata.name.as_deref().unwrap_or_default()
}

/// Applies the documents over `previous` (the last set served, `None` on
/// the first load): a valid document is taken, a rejected one keeps its
/// last good version when there is one. A pool must name an image some
/// document defines; an image a kept pool still uses is kept too.
pub fn accept(docs: &[Document], previous: Option<&Resources>) -> Accepted {
    let mut rejected = Vec::new();
    let reject = |d: &Document, message: String, kept: bool| Rejection {
        file: d.path.clone(),
        document: d.index,
        kind: d.kind,
        name: d.name.clone(),
        message,
        kept,
    };
    let last_pool = |key: &str| -> Option<&ExecutorPool> {
        previous?.pools.iter().find(|p| pool_key(p) == key)
    };
    let last_image = |name: &str| -> Option<&LanguageImage> {
        previous?.images.iter().find(|i| image_name(i) == name)
    };

    let mut images: Vec<LanguageImage> = Vec::new();
    for d in docs.iter().filter(|d| d.kind == "LanguageImage") {
        match &d.resource {
            Ok(Resource::Image(i)) => images.push(i.clone()),
            Ok(Resource::Pool(_)) => {}
            Err(e) => {
                let last = last_image(&d.name).filter(|_| !d.name.is_empty());
                images.extend(last.cloned());
                rejected.push(reject(d, e.clone(), last.is_some()));
            }
        }
    }
    let mut pools: Vec<ExecutorPool> = Vec::new();
    for d in docs.iter().filter(|d| d.kind == "ExecutorPool") {
        let checked = match &d.resource {
            Ok(Resource::Pool(p)) if images.iter().any(|i| image_name(i) == p.spec.image) => {
                Ok(p.clone())
            }
            Ok(Resource::Pool(p)) => Err(format!(
                "spec.image: LanguageImage {:?} is not defined in any file",
                p.spec.image
            )),
            Ok(Resource::Image(_)) => continue,
            Err(e) => Err(e.clone()),
        };
        match checked {
            Ok(p) => pools.push(p),
            Err(e) => {
                let last = last_pool(&d.name).filter(|_| !d.name.is_empty());
                pools.extend(last.cloned());
                rejected.push(reject(d, e, last.is_some()));
            }
        }
    }
    // A kept pool may use an image whose document is gone: keep that too.
    let have: BTreeSet<String> = images.iter().map(|i| image_name(i).to_string()).collect();
    let missing: BTreeSet<&str> = pools
        .iter()
        .map(|p| p.spec.image.as_str())
        .filter(|i| !have.contains(*i))
        .collect();
    for name in missing {
        if let Some(i) = last_image(name) {
            images.push(i.clone());
            rejected.push(Rejection {
                file: PathBuf::new(),
                document: 0,
                kind: "LanguageImage",
                name: name.to_string(),
                message:
                    "no file defines it any more, but a pool kept at its last good version uses it"
                        .into(),
                kept: true,
            });
        }
    }
    Accepted {
        resources: Resources::listed(pools, images, None),
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::files::parse;
    use std::path::Path;

    const IMAGE: &str = "kind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: m.py, run: python3 m.py}]\n";
    const POOL: &str =
        "kind: ExecutorPool\nmetadata: {name: p, namespace: t}\nspec: {image: small, warm: 2}\n";

    fn docs(text: &str) -> Vec<Document> {
        parse(text, Path::new("f.yaml")).unwrap()
    }

    fn warm(res: &Resources) -> Vec<u32> {
        res.pools.iter().map(|p| p.spec.warm).collect()
    }

    #[test]
    fn an_invalid_change_keeps_the_last_good_pool() {
        let first = accept(&docs(&format!("{IMAGE}---\n{POOL}")), None);
        assert!(first.rejected.is_empty(), "{:?}", first.rejected);
        let good = first.resources;
        for spec in [
            "{image: small, warm: 3, execution: {wallTimeMs: {default: 50000, max: 30000}}}",
            "{image: nosuch, warm: 3}",
            "{image: small, warm: 3, wram: 5}",
        ] {
            let pool =
                format!("kind: ExecutorPool\nmetadata: {{name: p, namespace: t}}\nspec: {spec}\n");
            let next = accept(&docs(&format!("{IMAGE}---\n{pool}")), Some(&good));
            assert_eq!(
                warm(&next.resources),
                [2],
                "{spec}: the last good pool is served"
            );
            let r = &next.rejected[0];
            assert_eq!(
                (r.file.to_str(), r.document, r.kind, r.name.as_str(), r.kept),
                (Some("f.yaml"), 1, "ExecutorPool", "t/p", true),
                "{spec}"
            );
        }
        let next = accept(
            &docs(&format!(
                "{IMAGE}---\n{}",
                POOL.replace("image: small", "image: nosuch")
            )),
            Some(&good),
        );
        assert!(
            next.rejected[0]
                .message
                .contains("LanguageImage \"nosuch\" is not defined in any file"),
            "{:?}",
            next.rejected
        );
    }

    #[test]
    fn a_new_invalid_pool_is_not_served_and_a_valid_change_applies() {
        let good = accept(&docs(IMAGE), None).resources;
        let bad = POOL.replace("warm: 2", "warm: 2, wram: 1");
        let next = accept(&docs(&format!("{IMAGE}---\n{bad}")), Some(&good));
        assert!(next.resources.pools.is_empty());
        assert!(!next.rejected[0].kept);
        let next = accept(
            &docs(&format!(
                "{IMAGE}---\n{}",
                POOL.replace("warm: 2", "warm: 5")
            )),
            Some(&good),
        );
        assert_eq!(warm(&next.resources), [5]);
        assert!(next.rejected.is_empty());
    }

    #[test]
    fn an_invalid_image_keeps_its_last_good_version_and_its_pools() {
        let good = accept(&docs(&format!("{IMAGE}---\n{POOL}")), None).resources;
        let bad = IMAGE.replace(
            "languages: [",
            "languages: [{name: python, sourceFile: '../x', run: r}, ",
        );
        let next = accept(&docs(&format!("{bad}---\n{POOL}")), Some(&good));
        assert_eq!(next.resources.images.len(), 1);
        assert_eq!(next.resources.images[0].spec, good.images[0].spec);
        assert_eq!(warm(&next.resources), [2]);
        assert_eq!(
            (next.rejected[0].kind, next.rejected[0].kept),
            ("LanguageImage", true)
        );
    }

    #[test]
    fn removing_an_image_a_pool_uses_keeps_both() {
        let good = accept(&docs(&format!("{IMAGE}---\n{POOL}")), None).resources;
        let next = accept(&docs(POOL), Some(&good));
        assert_eq!(warm(&next.resources), [2]);
        assert_eq!(
            next.resources.images.len(),
            1,
            "the image the kept pool uses stays"
        );
        assert_eq!(next.rejected.len(), 2, "{:?}", next.rejected);
        // Removing both is a valid change.
        let next = accept(&[], Some(&good));
        assert!(next.resources.pools.is_empty() && next.rejected.is_empty());
        assert!(next.resources.complete);
    }
}
