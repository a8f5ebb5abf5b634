//! Reading ExecutorPool and LanguageImage documents from YAML files and
//! folders. Each document is checked on its own (see `accept`): a file that
//! cannot be read or is not YAML fails the whole load, an invalid document
//! is rejected alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::agent::Resources;
use crate::agent::desired::pool_key;
use crate::crd::{ExecutorPool, LanguageImage, validate};

use super::accept::{self, Rejection};
use super::fields;

const API_VERSION: &str = "unsandbox.com/v1alpha1";

/// Why the resource files could not be loaded; names the file and document.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} document {index}: {message}")]
    Parse {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error("{kind} {name} is defined twice (in {first} and {second})")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}", rejected_message(.0))]
    Rejected(Vec<Rejection>),
}

fn rejected_message(r: &[Rejection]) -> String {
    let list: Vec<String> = r.iter().map(ToString::to_string).collect();
    format!("{} invalid documents: {}", r.len(), list.join("; "))
}

/// One ExecutorPool or LanguageImage document, checked on its own.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    /// Position in its file, from 0 (`---` separated).
    pub index: usize,
    pub kind: &'static str,
    /// `namespace/name` of a pool, the name of an image; as written even
    /// when the document is invalid (empty when it has none).
    pub name: String,
    /// The resource, or why the document is rejected.
    pub resource: Result<Resource, String>,
}

/// A valid resource. A few of them are read from files per load, so the
/// variants' sizes do not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    Pool(ExecutorPool),
    Image(LanguageImage),
}

/// The YAML files `paths` name: files as given, folders' `*.yaml`/`*.yml`
/// (recursively, sorted).
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            collect(p, &mut out)?;
        } else {
            return Err(LoadError::Missing(p.clone()));
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.into(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, out)?;
        } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(e);
        }
    }
    Ok(())
}

/// A cheap summary of the files (names, sizes, modification times) to notice changes.
pub type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// The stamp of the files `paths` name.
pub fn stamp(paths: &[PathBuf]) -> Result<Stamp, LoadError> {
    yaml_files(paths)?
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).map_err(|source| LoadError::Read {
                path: p.clone(),
                source,
            })?;
            Ok((p, m.len(), m.modified().ok()))
        })
        .collect()
}

/// Reads every ExecutorPool and LanguageImage document, valid or not.
/// Documents of other kinds (a Namespace, a Kustomization) are skipped.
pub fn read(paths: &[PathBuf]) -> Result<(Vec<Document>, Stamp), LoadError> {
    let before = stamp(paths)?;
    let mut docs = Vec::new();
    for path in yaml_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        docs.extend(parse(&text, &path)?);
    }
    let mut seen: Vec<(&'static str, &str, &Path)> = Vec::new();
    for d in docs.iter().filter(|d| !d.name.is_empty()) {
        if let Some((_, _, first)) = seen.iter().find(|(k, n, _)| *k == d.kind && *n == d.name) {
            return Err(LoadError::Duplicate {
                kind: d.kind,
                name: d.name.clone(),
                first: first.into(),
                second: d.path.clone(),
            });
        }
        seen.push((d.kind, &d.name, &d.path));
    }
    Ok((docs, before))
}

/// Loads every document; any invalid one fails the load (`check`, the
/// first start, tools). The files are all there is: the result is a
/// complete listing.
pub fn load(paths: &[PathBuf]) -> Result<(Resources, Stamp), LoadError> {
    let (docs, stamp) = read(paths)?;
    let accepted = accept::accept(&docs, None);
    if !accepted.rejected.is_empty() {
        return Err(LoadError::Rejected(accepted.rejected));
    }
    Ok((accepted.resources, stamp))
}

/// The unsandbox documents of one file, each checked on its own. Only text
/// that is not YAML fails the file.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Document>, LoadError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| LoadError::Parse {
            path: path.into(),
            index,
            message: e.to_string(),
        })?;
        let kind: &'static str = match value.get("kind").and_then(|k| k.as_str()) {
            Some("ExecutorPool") => "ExecutorPool",
            Some("LanguageImage") => "LanguageImage",
            other => {
                if !value.is_null() {
                    tracing::debug!(path = %path.display(), index, kind = other.unwrap_or(""), "skipping a document of another kind");
                }
                continue;
            }
        };
        let meta = |field: &str| {
            value
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let name = match (kind, meta("name")) {
            (_, n) if n.is_empty() => n,
            ("ExecutorPool", n) => {
                let ns = Some(meta("namespace")).filter(|n| !n.is_empty());
                format!("{}/{n}", ns.as_deref().unwrap_or("default"))
            }
            (_, n) => n,
        };
        out.push(Document {
            path: path.into(),
            index,
            kind,
            name,
            resource: check(kind, value),
        });
    }
    Ok(out)
}

/// Checks one document as the API server would admit it: apiVersion,
/// unknown fields, types, then the same validation the CRD applies.
fn check(kind: &'static str, value: serde_yaml::Value) -> Result<Resource, String> {
    let api = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or(API_VERSION);
    if api != API_VERSION {
        return Err(format!("apiVersion {api:?} is not {API_VERSION}"));
    }
    let json = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    let unknown = fields::unknown(kind, &json);
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|f| format!("{f:?}")).collect();
        return Err(format!("unknown field {}", list.join(", unknown field ")));
    }
    let resource = match kind {
        "ExecutorPool" => {
            let pool: ExecutorPool = serde_yaml::from_value(value).map_err(|e| e.to_string())?;
            validate::pool(&pool.spec).map_err(|e| e.to_string())?;
            Resource::Pool(pool)
        }
        _ => {
            let image: LanguageImage = serde_yaml::from_value(value).map_err(|e| e.to_string())?;
            validate::image(&image.spec).map_err(|e| e.to_string())?;
            Resource::Image(image)
        }
    };
    let named = match &resource {
        Resource::Pool(p) => &p.metadata.name,
        Resource::Image(i) => &i.metadata.name,
    };
    if named.as_deref().unwrap_or_default().is_empty() {
        return Err("metadata.name is required".into());
    }
    Ok(resource)
}

/// Names of the resources loaded, for messages.
pub fn summary(res: &Resources) -> String {
    let pools: BTreeSet<String> = res.pools.iter().map(pool_key).collect();
    let images: BTreeSet<String> = res
        .images
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    format!("pools {pools:?}, images {images:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Document> {
        parse(text, Path::new("x.yaml")).unwrap()
    }

    fn error(d: &Document) -> &str {
        d.resource.as_ref().err().map(String::as_str).unwrap_or("")
    }

    #[test]
    fn documents_of_both_kinds_and_others_skipped() {
        let d = docs(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n---\napiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: py, sourceFile: m.py, run: python3 m.py}]\n---\napiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: py}\nspec: {image: small}\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].index, d[0].name.as_str()), (2, "small"));
        assert_eq!((d[1].index, d[1].name.as_str()), (3, "default/py"));
        let res = accept::accept(&d, None).resources;
        assert_eq!(summary(&res), "pools {\"default/py\"}, images {\"small\"}");
    }

    #[test]
    fn loaded_files_are_a_complete_listing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("none.yaml"), "").unwrap();
        let (res, _) = load(&[dir.path().to_path_buf()]).unwrap();
        assert!(res.complete, "no pool in the files means no pool at all");
        assert!(res.pools.is_empty());
    }

    #[test]
    fn each_document_is_checked_on_its_own() {
        let d = docs(
            "kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n---\nkind: ExecutorPool\nmetadata: {name: b}\nspec: {image: s, network: open}\n---\napiVersion: unsandbox.com/v2\nkind: ExecutorPool\nmetadata: {name: c}\nspec: {image: s}\n---\nkind: ExecutorPool\nmetadata: {namespace: t}\nspec: {image: s}\n",
        );
        assert!(d[0].resource.is_ok());
        assert!(error(&d[1]).contains("unknown variant `open`"), "{d:?}");
        assert!(error(&d[2]).contains("is not unsandbox.com/v1alpha1"));
        assert_eq!(
            (d[3].name.as_str(), error(&d[3])),
            ("", "metadata.name is required")
        );
    }

    #[test]
    fn invalid_specs_are_rejected_as_admission_would() {
        let d = docs(
            "kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s, execution: {wallTimeMs: {default: 50000, max: 30000}}}\n---\nkind: LanguageImage\nmetadata: {name: s}\nspec: {source: {}, languages: []}\n",
        );
        assert!(
            error(&d[0]).contains("spec.execution.wallTimeMs: default 50000 is above max 30000"),
            "{d:?}"
        );
        assert!(error(&d[1]).contains("spec.source: set alias"), "{d:?}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let d = docs("kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s, wram: 5}\n");
        assert_eq!(error(&d[0]), "unknown field \"spec.wram\"");
    }

    #[test]
    fn a_duplicate_or_a_file_that_is_not_yaml_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let pool = "kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n";
        std::fs::write(dir.path().join("a.yaml"), pool).unwrap();
        std::fs::write(dir.path().join("b.yaml"), pool).unwrap();
        let e = read(&[dir.path().into()]).unwrap_err();
        assert!(matches!(e, LoadError::Duplicate { .. }), "{e}");
        std::fs::write(dir.path().join("b.yaml"), "a: [").unwrap();
        let e = read(&[dir.path().into()]).unwrap_err().to_string();
        assert!(e.contains("b.yaml document 0: "), "{e}");
    }

    #[test]
    fn load_fails_on_any_invalid_document_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.yaml"),
            "kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: nosuch}\n",
        )
        .unwrap();
        let e = load(&[dir.path().into()]).unwrap_err().to_string();
        assert!(
            e.contains("p.yaml document 0: ExecutorPool default/a: "),
            "{e}"
        );
        assert!(e.contains("\"nosuch\""), "{e}");
    }
}
