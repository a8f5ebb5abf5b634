//! Makes sure a LanguageImage's LXD image is in the host's image store:
//! by fingerprint, by alias, or by building its recipe from `images/`.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::process::Command;

use crate::crd::ImageSource;
use crate::lxd::{Lxd, LxdError};

/// Why an image could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} is not in the LXD image store and no recipe is named to build it")]
    Missing(String),
    #[error(
        "image {what} is missing and recipe builds are disabled on this host (build it with: images/build.sh {recipe})"
    )]
    BuildDisabled { what: String, recipe: String },
    #[error("building recipe {recipe} failed: {message}")]
    Build { recipe: String, message: String },
    #[error(transparent)]
    Lxd(#[from] LxdError),
}

fn describe(source: &ImageSource) -> String {
    source
        .fingerprint
        .clone()
        .or_else(|| source.effective_alias())
        .unwrap_or_else(|| "(unnamed)".to_string())
}

/// Image property prefix under which image builds record each toolchain's
/// version (`unsandbox.version.<language>`).
pub const VERSION_PROPERTY: &str = "unsandbox.version.";

/// The toolchain versions recorded in an image's properties, by language. Pure.
pub fn versions(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(VERSION_PROPERTY)?.to_string(), v.clone())))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

/// The versions recorded in the image with this fingerprint.
pub async fn recorded_versions(
    lxd: &Lxd,
    fingerprint: &str,
) -> Result<BTreeMap<String, String>, LxdError> {
    Ok(lxd
        .image_by_fingerprint(fingerprint)
        .await?
        .map(|i| versions(&i.properties))
        .unwrap_or_default())
}

/// The fingerprint of the image `source` names, if it is in the store.
pub async fn lookup(lxd: &Lxd, source: &ImageSource) -> Result<Option<String>, LxdError> {
    if let Some(fp) = &source.fingerprint {
        return Ok(lxd.image_by_fingerprint(fp).await?.map(|i| i.fingerprint));
    }
    match source.effective_alias() {
        Some(alias) => Ok(lxd.image_by_alias(&alias).await?.map(|i| i.fingerprint)),
        None => Ok(None),
    }
}

/// The fingerprint of the image, building it from its recipe first when it
/// is missing and `images_dir` allows builds.
pub async fn ensure(
    lxd: &Lxd,
    source: &ImageSource,
    images_dir: Option<&Path>,
) -> Result<String, ImageError> {
    if let Some(fp) = lookup(lxd, source).await? {
        return Ok(fp);
    }
    let Some(recipe) = &source.recipe else {
        return Err(ImageError::Missing(describe(source)));
    };
    let Some(dir) = images_dir else {
        return Err(ImageError::BuildDisabled {
            what: describe(source),
            recipe: recipe.clone(),
        });
    };
    tracing::info!(recipe, "image missing: building it from its recipe");
    let mut cmd = Command::new("bash");
    cmd.arg(dir.join("build.sh")).arg(recipe).kill_on_drop(true);
    if let Some(alias) = &source.alias {
        cmd.env("UNSANDBOX_IMAGE_ALIAS", alias);
    }
    let out = cmd.output().await.map_err(|e| ImageError::Build {
        recipe: recipe.clone(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let message = format!(
            "{}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
        return Err(ImageError::Build {
            recipe: recipe.clone(),
            message,
        });
    }
    lookup(lxd, source)
        .await?
        .ok_or_else(|| ImageError::Missing(describe(source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_image_properties() {
        let props = BTreeMap::from([
            ("unsandbox.version.python".to_string(), "3.11.2".to_string()),
            ("unsandbox.version.".to_string(), "x".to_string()),
            ("unsandbox.version.lua".to_string(), "".to_string()),
            ("description".to_string(), "small".to_string()),
        ]);
        assert_eq!(
            versions(&props),
            BTreeMap::from([("python".to_string(), "3.11.2".to_string())])
        );
    }
}
