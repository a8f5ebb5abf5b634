//! Language detection for `POST /run`.

pub mod accuracy;
pub mod corpus;
pub mod detect;
pub mod features;
pub mod lexicon;
