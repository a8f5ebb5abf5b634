//! Language detection for `POST /run`.

pub mod detect;
