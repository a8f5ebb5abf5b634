//! Logging setup.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `text` or `json`, filtered by RUST_LOG,
/// coloured only when stderr is a terminal (never in files and pipes) and
/// `NO_COLOR` is unset.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Whether to colour the log. Pure.
fn colour(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal() {
        assert!(super::colour(true, false));
        assert!(
            !super::colour(false, false),
            "files and pipes get no escape codes"
        );
        assert!(!super::colour(true, true), "NO_COLOR");
    }
}
