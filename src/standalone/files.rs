//! Reading ExecutorPool and LanguageImage documents from YAML files and folders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::agent::Resources;
use crate::agent::desired::pool_key;
use crate::crd::{ExecutorPool, LanguageImage};

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
pub fn stamp(
    paths: &[PathBuf],
) -> Result<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>, LoadError> {
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

type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// Loads every document. Documents of other kinds (a Namespace, a
/// Kustomization) are skipped; unsandbox documents must parse.
pub fn load(paths: &[PathBuf]) -> Result<(Resources, Stamp), LoadError> {
    let before = stamp(paths)?;
    let mut res = Resources::default();
    let mut origin: Vec<(&'static str, String, PathBuf)> = Vec::new();
    for path in yaml_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        parse_into(&text, &path, &mut res, &mut origin)?;
    }
    // The files are all there is: what they do not name does not exist.
    res.complete = true;
    Ok((res, before))
}

/// Parses one file's documents into `res`.
pub fn parse_into(
    text: &str,
    path: &Path,
    res: &mut Resources,
    origin: &mut Vec<(&'static str, String, PathBuf)>,
) -> Result<(), LoadError> {
    let err = |index: usize, message: String| LoadError::Parse {
        path: path.into(),
        index,
        message,
    };
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(index, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let api = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or(API_VERSION);
        let (kind, name): (&'static str, String) = match kind.as_str() {
            "ExecutorPool" | "LanguageImage" if api != API_VERSION => {
                return Err(err(
                    index,
                    format!("apiVersion {api:?} is not {API_VERSION}"),
                ));
            }
            "ExecutorPool" => {
                let pool: ExecutorPool = serde_yaml::from_value(value)
                    .map_err(|e| err(index, format!("ExecutorPool: {e}")))?;
                if pool.metadata.name.as_deref().unwrap_or_default().is_empty() {
                    return Err(err(index, "ExecutorPool: metadata.name is required".into()));
                }
                let key = pool_key(&pool);
                res.pools.push(pool);
                ("ExecutorPool", key)
            }
            "LanguageImage" => {
                let image: LanguageImage = serde_yaml::from_value(value)
                    .map_err(|e| err(index, format!("LanguageImage: {e}")))?;
                let name = image.metadata.name.clone().unwrap_or_default();
                if name.is_empty() {
                    return Err(err(
                        index,
                        "LanguageImage: metadata.name is required".into(),
                    ));
                }
                res.images.push(image);
                ("LanguageImage", name)
            }
            other => {
                tracing::debug!(path = %path.display(), index, kind = other, "skipping a document of another kind");
                continue;
            }
        };
        if let Some((_, _, first)) = origin.iter().find(|(k, n, _)| *k == kind && *n == name) {
            return Err(LoadError::Duplicate {
                kind,
                name,
                first: first.clone(),
                second: path.into(),
            });
        }
        origin.push((kind, name, path.into()));
    }
    Ok(())
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

    fn parse(text: &str) -> Result<Resources, LoadError> {
        let mut res = Resources::default();
        parse_into(text, Path::new("x.yaml"), &mut res, &mut Vec::new())?;
        Ok(res)
    }

    #[test]
    fn documents_of_both_kinds_and_others_skipped() {
        let res = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n---\napiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: []\n---\napiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: py}\nspec: {image: small}\n",
        )
        .unwrap();
        assert_eq!(res.images.len(), 1);
        assert_eq!(res.pools.len(), 1);
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
    fn errors_name_the_document() {
        let e = parse("kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n---\nkind: ExecutorPool\nmetadata: {name: b}\nspec: {image: s, network: open}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.yaml document 1: ExecutorPool: "), "{e}");
        assert!(e.contains("unknown variant `open`"), "{e}");
        let e = parse("kind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n---\nkind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n")
            .unwrap_err();
        assert!(matches!(e, LoadError::Duplicate { .. }), "{e}");
        let e = parse("apiVersion: unsandbox.com/v2\nkind: ExecutorPool\nmetadata: {name: a}\nspec: {image: s}\n").unwrap_err();
        assert!(
            e.to_string().contains("is not unsandbox.com/v1alpha1"),
            "{e}"
        );
    }
}
