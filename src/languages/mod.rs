//! Language detection for `POST /run`.

pub mod detect;
pub mod grammar;
pub mod model;
pub mod names;
pub mod notice;
pub mod signature;
pub mod tokens;

/// A language as served on this host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogEntry {
    pub name: String,
    pub aliases: Vec<String>,
    pub version: Option<String>,
    /// File name extensions of its sources, without the dot (the
    /// LanguageImage's `extensions`).
    pub extensions: Vec<String>,
    /// `(pool key, network tier, warm containers)` of every pool serving it.
    pub pools: Vec<(String, crate::crd::NetworkTier, u32)>,
}
