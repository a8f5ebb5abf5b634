//! The images the host's pools use: each looked up (or built) once, then
//! looked up again now and then, so an image rebuilt behind the same alias
//! or recipe (a new fingerprint) is noticed and rolled out (see `rollout`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::crd::ImageSource;

use super::super::desired::{ResolvedPool, container_hash};
use super::rollout::{Generation, Seen};
use super::{Core, Effect, ShapeHash};

/// How long a failed image lookup or build waits before it is tried again.
pub(super) const IMAGE_RETRY: Duration = Duration::from_secs(30);

/// How often an image in the store is looked up again by default, so a new
/// fingerprint behind its alias or recipe is noticed (see
/// `Core::refresh_images_every`).
pub(super) const IMAGE_REFRESH: Duration = Duration::from_secs(60);

/// Where a host stands with one image.
#[derive(Debug, Clone)]
pub enum ImageState {
    /// Being looked up or built.
    Pending,
    /// In the store, as of the last lookup (`checked`).
    Ready { image: ImageReady, checked: Instant },
    /// The lookup or build failed; tried again at `retry_at`.
    Failed { message: String, retry_at: Instant },
}

/// An image in the host's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReady {
    pub fingerprint: String,
    /// Toolchain versions the image build recorded, by language.
    pub versions: BTreeMap<String, String>,
}

impl Core {
    /// Looks every image in the store up again after `every`, so a new
    /// fingerprint behind an alias or recipe starts a rollout.
    pub fn refresh_images_every(&mut self, every: Duration) {
        self.image_refresh = every;
    }

    /// An image lookup or build finished. A lookup again of an image in
    /// the store that fails keeps the image known (it is tried again after
    /// the refresh interval): a pool never stops serving for a transient
    /// error.
    pub fn image_resolved(
        &mut self,
        source: ImageSource,
        result: Result<ImageReady, String>,
        now: Instant,
    ) {
        let refreshed = self.refreshing.remove(&source);
        let known = match self.images.get(&source) {
            Some(ImageState::Ready { image, .. }) => Some(image.clone()),
            _ => None,
        };
        let state = match (result, known) {
            (Ok(image), known) => {
                if known.is_none() {
                    tracing::info!(
                        ?source,
                        fingerprint = image.fingerprint,
                        versions = image.versions.len(),
                        "image ready"
                    );
                }
                if let Some(old) = known.filter(|k| k.fingerprint != image.fingerprint) {
                    tracing::info!(
                        ?source,
                        from = old.fingerprint,
                        to = image.fingerprint,
                        "the image has a new fingerprint: rolling pools over to it"
                    );
                }
                ImageState::Ready {
                    image,
                    checked: now,
                }
            }
            (Err(message), Some(image)) if refreshed => {
                tracing::warn!(
                    ?source,
                    error = message,
                    fingerprint = image.fingerprint,
                    "cannot look the image up again; keeping the one known"
                );
                ImageState::Ready {
                    image,
                    checked: now,
                }
            }
            (Err(message), _) => ImageState::Failed {
                message,
                retry_at: now + IMAGE_RETRY,
            },
        };
        self.images.insert(source, state);
    }

    /// What the host knows of pool `r`'s image `source` (`None`: the pool
    /// cannot be served). Adds the lookups to start to `jobs`, and orders
    /// the lookups again that are due.
    pub(super) fn seen(
        &mut self,
        source: Option<&ImageSource>,
        r: &ResolvedPool,
        now: Instant,
        jobs: &mut BTreeSet<ImageSource>,
        out: &mut Vec<Effect>,
    ) -> Seen {
        let Some(source) = source else {
            return Seen::Unservable;
        };
        match self.images.get(source) {
            Some(ImageState::Pending) => Seen::Pending,
            None => {
                jobs.insert(source.clone());
                Seen::Pending
            }
            Some(ImageState::Ready { image, checked }) => {
                if now >= *checked + self.image_refresh && self.refreshing.insert(source.clone()) {
                    out.push(Effect::EnsureImage(source.clone()));
                }
                Seen::Ready(Generation {
                    hash: ShapeHash(container_hash(&r.spec, &image.fingerprint)),
                    fingerprint: image.fingerprint.clone(),
                    versions: image.versions.clone(),
                })
            }
            Some(ImageState::Failed { message, retry_at }) => {
                if now >= *retry_at {
                    jobs.insert(source.clone());
                }
                Seen::Failed(message.clone())
            }
        }
    }
}
