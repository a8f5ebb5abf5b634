//! Protection of LanguageImages in use (like `kubernetes.io/pvc-protection`):
//! every image carries [`IN_USE_FINALIZER`]; a deleted image keeps it, and
//! says which pools hold it, until no pool refers to it. Pure.

use crate::crd::condition::{Desired, READY, RECONCILING, Reason, STALLED};
use crate::crd::{ExecutorPool, LanguageImage, validate};

/// Finalizer that keeps a deleted LanguageImage while pools refer to it.
pub const IN_USE_FINALIZER: &str = "unsandbox.com/in-use";

/// Pools named in a message before the rest are only counted.
const NAMED: usize = 3;

/// `namespace/name` of every pool (deleted ones too: their containers still
/// run the image until the agents remove them) that refers to `image`, sorted.
pub fn users<'a>(pools: impl IntoIterator<Item = &'a ExecutorPool>, image: &str) -> Vec<String> {
    let mut out: Vec<String> = pools
        .into_iter()
        .filter(|p| p.spec.image == image)
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    out
}

/// `t/a, t/b, t/c and 2 more`.
pub fn name_some(names: &[String]) -> String {
    let shown = names[..names.len().min(NAMED)].join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        rest => format!("{shown} and {rest} more"),
    }
}

/// Ready, Reconciling and Stalled of an image, given the pools that use it.
pub fn image_conditions(image: &LanguageImage, users: &[String]) -> Vec<Desired> {
    if image.metadata.deletion_timestamp.is_some() && !users.is_empty() {
        let message = format!(
            "deleted but in use by ExecutorPools {}; it goes when no pool refers to it",
            name_some(users)
        );
        return vec![
            Desired::new(READY, false, Reason::InUse, message.clone()),
            Desired::new(RECONCILING, true, Reason::InUse, message),
            Desired::new(STALLED, false, Reason::InUse, "waiting for the pools to go"),
        ];
    }
    match validate::image(&image.spec) {
        Ok(()) => vec![
            Desired::new(
                READY,
                true,
                Reason::Valid,
                format!("{} languages", image.spec.languages.len()),
            ),
            Desired::new(RECONCILING, false, Reason::Valid, "nothing to do"),
            Desired::new(STALLED, false, Reason::Valid, "the spec is valid"),
        ],
        Err(e) => vec![
            Desired::new(READY, false, Reason::InvalidSpec, e.to_string()),
            Desired::new(
                RECONCILING,
                false,
                Reason::InvalidSpec,
                "waiting for a change to the spec",
            ),
            Desired::new(STALLED, true, Reason::InvalidSpec, e.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pool(ns: &str, name: &str, image: &str) -> ExecutorPool {
        serde_yaml::from_str(&format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{image: {image}}}\n"
        ))
        .unwrap()
    }

    fn image() -> LanguageImage {
        serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: main.py, run: python3 main.py}]\n",
        )
        .unwrap()
    }

    #[test]
    fn users_and_their_names() {
        let pools = [
            pool("t", "b", "small"),
            pool("t", "a", "small"),
            pool("u", "c", "big"),
        ];
        assert_eq!(users(&pools, "small"), ["t/a", "t/b"]);
        let names: Vec<String> = (1..=5).map(|i| format!("t/p{i}")).collect();
        let cases = [
            (0, ""),
            (1, "t/p1"),
            (3, "t/p1, t/p2, t/p3"),
            (4, "t/p1, t/p2, t/p3 and 1 more"),
            (5, "t/p1, t/p2, t/p3 and 2 more"),
        ];
        for (n, want) in cases {
            assert_eq!(name_some(&names[..n]), want);
        }
    }

    #[test]
    fn conditions_of_an_image() {
        let mut img = image();
        let reasons = |c: Vec<Desired>| -> Vec<(Reason, bool)> {
            c.into_iter().map(|d| (d.reason, d.status)).collect()
        };
        let valid = vec![
            (Reason::Valid, true),
            (Reason::Valid, false),
            (Reason::Valid, false),
        ];
        assert_eq!(reasons(image_conditions(&img, &["t/a".into()])), valid);
        img.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        let in_use = image_conditions(&img, &["t/a".into()]);
        assert_eq!(in_use[0].reason, Reason::InUse);
        assert!(
            in_use[0].message.contains("ExecutorPools t/a;"),
            "{in_use:?}"
        );
        assert!(in_use[1].status, "Reconciling while it waits");
        assert_eq!(reasons(image_conditions(&img, &[])), valid, "unused: goes");
        let mut bad = image();
        bad.spec.languages.clear();
        let c = image_conditions(&bad, &[]);
        assert_eq!((c[0].reason, c[2].status), (Reason::InvalidSpec, true));
    }
}
