//! `LanguageImage`: an LXD image and the languages it provides.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// An LXD image and the languages it provides: how a host gets the image, and
/// how to compile, run and smoke-test each language inside it.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "unsandbox.com",
    version = "v1alpha1",
    kind = "LanguageImage",
    plural = "languageimages",
    shortname = "li",
    status = "LanguageImageStatus",
    printcolumn = r#"{"name":"Alias","type":"string","jsonPath":".spec.source.alias"}"#,
    printcolumn = r#"{"name":"Recipe","type":"string","jsonPath":".spec.source.recipe"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LanguageImageSpec {
    /// Where a host gets the LXD image from.
    pub source: ImageSource,
    /// The languages this image provides (1 to 256). Names and aliases must be unique.
    #[schemars(length(min = 1, max = 256))]
    pub languages: Vec<LanguageSpec>,
}

/// Where a host gets the LXD image. At least one field is set. A host uses the
/// image with this fingerprint, else the one with this alias; when neither is
/// present locally and a recipe is named, the host builds it from `images/`.
#[derive(
    KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.alias) || has(self.fingerprint) || has(self.recipe)").message("set alias, fingerprint or recipe"))]
pub struct ImageSource {
    /// Alias of an image in the host's LXD image store. Defaults to
    /// `unsandbox-<recipe>` when a recipe is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub alias: Option<String>,
    /// Fingerprint (or a unique prefix of at least 12 hex digits) of an image
    /// in the host's LXD image store. Takes precedence over the alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(r"^[0-9a-f]{12,64}$"))]
    pub fingerprint: Option<String>,
    /// Name of a build recipe folder under `images/` (for example `small`),
    /// built with `images/build.sh` when the image is missing on a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), pattern(r"^[a-z0-9][a-z0-9-]*$"))]
    pub recipe: Option<String>,
}

impl ImageSource {
    /// The alias a host looks the image up by, if any.
    pub fn effective_alias(&self) -> Option<String> {
        self.alias
            .clone()
            .or_else(|| self.recipe.as_ref().map(|r| format!("unsandbox-{r}")))
    }
}

/// One language the image provides.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LanguageSpec {
    /// Canonical name, used in `POST /execute/{language}` (for example `python`).
    #[schemars(length(max = 63), pattern(r"^[a-z0-9][a-z0-9+#._-]*$"))]
    pub name: String,
    /// Other names users type for this language (for example `py`, `python3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9][A-Za-z0-9+#._-]*$"))
    )]
    pub aliases: Vec<String>,
    /// Toolchain version. Normally left out: image builds record each
    /// toolchain's own report of its version in the image (property
    /// `unsandbox.version.<name>`), and hosts serve that. Set only for
    /// images built elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub version: Option<String>,
    /// File name the submitted code is written to, in the working directory
    /// (for example `main.py`).
    #[schemars(length(max = 255), pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub source_file: String,
    /// Shell command that compiles the source, run in the working directory
    /// as its own stage with its own limits (the pool's `execution.compileTimeMs`
    /// and `limits.compileMemoryMib`). A non-zero exit is a `compile_error`
    /// and the run stage is skipped. Absent for interpreted languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub compile: Option<String>,
    /// Shell command that runs the program, in the working directory. The
    /// request's arguments are appended to it.
    #[schemars(length(min = 1, max = 8192))]
    pub run: String,
    /// Whether the runner takes the request's arguments as input files or
    /// as its own options instead of handing them to the program (sed, awk
    /// and m4 read them as input files; a Brainfuck program has no
    /// arguments). The Piston-compatible API then passes none, as Piston's
    /// own runners do (its clients send `["1", "2", "3"]` by default); the
    /// native API passes them as given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arguments_are_inputs: bool,
    /// File name extensions of this language, without the dot, used to detect
    /// the language of extra files and scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 32), pattern(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"))
    )]
    pub extensions: Vec<String>,
    /// Extra environment variables for compile and run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub env: BTreeMap<String, String>,
    /// Shell command run once in every fresh container, as the runner user,
    /// before the container counts as warm: it loads the toolchain into
    /// memory so the first execution starts as fast as later ones would
    /// (for example `python3 -c pass`). Its output is discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub warmup: Option<String>,
    /// Programs that must print their expected output, on every host, in a
    /// fresh container of each pool, before the host serves the language
    /// (typically `hello`, `stdin` and `args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub smoke_tests: Vec<SmokeTest>,
}

impl LanguageSpec {
    /// Whether `name` is this language's name or one of its aliases (case-insensitive).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// A smoke test: code, its stdin and arguments, and the stdout it must print.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SmokeTest {
    /// Short name of what the test proves (for example `hello`, `stdin`, `args`).
    #[schemars(length(max = 63), pattern(r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
    /// Source code of the test program.
    #[schemars(length(min = 1, max = 65536))]
    pub code: String,
    /// Standard input given to the program.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 65536))]
    pub stdin: String,
    /// Arguments given to the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// The exact standard output the program must print.
    #[schemars(length(max = 65536))]
    pub expected_stdout: String,
}

/// Observed state of a LanguageImage.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LanguageImageStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` once the spec is valid; `Degraded` with a reason otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
