//! The image store: listing and lookup by alias or fingerprint.

use hyper::Method;

use super::client::Lxd;
use super::error::LxdError;
use super::types::ImageInfo;

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
}
