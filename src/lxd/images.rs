//! The image store: listing, lookup by alias or fingerprint, import.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::client::Lxd;
use super::error::LxdError;
use super::types::{ImageInfo, Operation};

impl Lxd {
    /// Every image in the store, with aliases and properties.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, LxdError> {
        self.sync(Method::GET, "/1.0/images?recursion=1", None)
            .await
    }

    /// The image with this fingerprint (or unique fingerprint prefix), if present.
    pub async fn image_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<ImageInfo>, LxdError> {
        let matches: Vec<ImageInfo> = self
            .images()
            .await?
            .into_iter()
            .filter(|i| i.fingerprint.starts_with(fingerprint))
            .collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.into_iter().next()),
            n => Err(LxdError::Api {
                status: 409,
                message: format!("fingerprint prefix {fingerprint} matches {n} images"),
            }),
        }
    }

    /// The image an alias points at, if the alias exists.
    pub async fn image_by_alias(&self, alias: &str) -> Result<Option<ImageInfo>, LxdError> {
        #[derive(serde::Deserialize)]
        struct Alias {
            target: String,
        }
        let target = match self
            .sync::<Alias>(Method::GET, &format!("/1.0/images/aliases/{alias}"), None)
            .await
        {
            Ok(a) => a.target,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match self
            .sync(Method::GET, &format!("/1.0/images/{target}"), None)
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Imports an image from a metadata tarball and a rootfs tarball (LXD's
    /// split format) and points `alias` at it. Returns the fingerprint.
    pub async fn import_image(
        &self,
        metadata: &Path,
        rootfs: &Path,
        alias: &str,
    ) -> Result<String, LxdError> {
        let meta = tokio::fs::read(metadata)
            .await
            .map_err(|e| LxdError::Decode(format!("{}: {e}", metadata.display())))?;
        let root = tokio::fs::read(rootfs)
            .await
            .map_err(|e| LxdError::Decode(format!("{}: {e}", rootfs.display())))?;
        let boundary = format!("unsandbox{:016x}", rand::random::<u64>());
        let mut body = Vec::with_capacity(meta.len() + root.len() + 512);
        for (field, data) in [("metadata", &meta), ("rootfs", &root)] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{field}.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let (status, bytes) = self
            .raw(
                Method::POST,
                "/1.0/images",
                Bytes::from(body),
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .await?;
        let env: super::types::Envelope = serde_json::from_slice(&bytes)
            .map_err(|e| LxdError::Decode(format!("image import {status}: {e}")))?;
        if env.kind == "error" {
            return Err(LxdError::Api {
                status: env.error_code.max(status.as_u16()),
                message: env.error,
            });
        }
        let op: Operation =
            serde_json::from_value(env.metadata).map_err(|e| LxdError::Decode(e.to_string()))?;
        let done = self.wait(&op.id, Duration::from_secs(600)).await?;
        let fingerprint = done
            .metadata
            .as_ref()
            .and_then(|m| m.get("fingerprint"))
            .and_then(|f| f.as_str())
            .ok_or_else(|| LxdError::Decode("image import returned no fingerprint".into()))?
            .to_string();
        self.set_alias(alias, &fingerprint).await?;
        Ok(fingerprint)
    }

    /// Points `alias` at `fingerprint`, creating or moving it.
    pub async fn set_alias(&self, alias: &str, fingerprint: &str) -> Result<(), LxdError> {
        let body = json!({"name": alias, "target": fingerprint, "description": "unsandbox"});
        match self
            .call(Method::POST, "/1.0/images/aliases", Some(body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => self
                .call(
                    Method::PUT,
                    &format!("/1.0/images/aliases/{alias}"),
                    Some(json!({"target": fingerprint})),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Deletes an image by fingerprint.
    pub async fn delete_image(&self, fingerprint: &str) -> Result<(), LxdError> {
        match self
            .run_operation(
                Method::DELETE,
                &format!("/1.0/images/{fingerprint}"),
                None,
                Duration::from_secs(120),
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
