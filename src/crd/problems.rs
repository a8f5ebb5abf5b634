//! Why a pool cannot be served at all, from its spec and its LanguageImage.
//! The controller (the pool's status) and every agent (its node's entry and
//! its refusal to launch) decide it with this one function, so they always
//! give the same reason and message. Pure.

use super::{ExecutorPoolSpec, LanguageImage, Reason, validate};

/// Why a pool is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The reason its conditions carry.
    pub reason: Reason,
    /// What a person should know.
    pub message: String,
}

impl Problem {
    /// A problem with this reason and message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The problem that keeps the pool with this spec from being served, given
/// its LanguageImage (`None`: it does not exist), or `None` when there is
/// none. When several apply the first of these is given: invalid spec,
/// missing image, invalid image.
pub fn pool_problem(spec: &ExecutorPoolSpec, image: Option<&LanguageImage>) -> Option<Problem> {
    if let Err(e) = validate::pool(spec) {
        return Some(Problem::new(Reason::InvalidSpec, e.to_string()));
    }
    let Some(image) = image else {
        return Some(Problem::new(
            Reason::ImageNotFound,
            format!("LanguageImage {:?} does not exist", spec.image),
        ));
    };
    if let Err(e) = validate::image(&image.spec) {
        return Some(Problem::new(
            Reason::ImageInvalid,
            format!("LanguageImage {:?}: {e}", spec.image),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(languages: &str) -> LanguageImage {
        serde_yaml::from_str(&format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {{name: small}}\nspec:\n  source: {{recipe: small}}\n  languages: {languages}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_first_problem_wins_and_says_what_is_wrong() {
        let good = image("[{name: python, sourceFile: main.py, run: python3 main.py}]");
        let bad = image("[]");
        let invalid = "execution: {wallTimeMs: {default: 10, max: 1}}\nnetwork: semitrusted";
        let semi = "network: semitrusted";
        // (extra spec, image, reason, start of the message)
        let cases = [
            ("", Some(&good), None, ""),
            (
                invalid,
                None,
                Some(Reason::InvalidSpec),
                "spec.execution.wallTimeMs",
            ),
            (
                semi,
                None,
                Some(Reason::ImageNotFound),
                "LanguageImage \"small\" does not exist",
            ),
            (
                semi,
                Some(&bad),
                Some(Reason::ImageInvalid),
                "LanguageImage \"small\": ",
            ),
            (semi, Some(&good), None, ""),
            (
                "egress: {allow: [{host: pypi.org}]}",
                Some(&good),
                Some(Reason::InvalidSpec),
                "spec.egress: applies only to network: semitrusted",
            ),
        ];
        for (extra, img, reason, message) in cases {
            let spec: ExecutorPoolSpec =
                serde_yaml::from_str(&format!("image: small\n{extra}")).unwrap();
            let got = pool_problem(&spec, img);
            assert_eq!(got.as_ref().map(|p| p.reason), reason, "{extra}");
            if let Some(p) = got {
                assert!(p.message.starts_with(message), "{extra}: {}", p.message);
            }
        }
    }
}
