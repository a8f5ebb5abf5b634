//! Language detection for `POST /run`.

pub mod detect;
pub mod features;
pub mod lexicon;

/// The detection tests measure against the same catalog of served
/// languages as the `detect-accuracy` command.
#[cfg(test)]
pub(crate) use crate::tools::accuracy;
