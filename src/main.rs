//! The `unsandbox` binary: every command is in the library's `cli`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    unsandbox::cli::main().await
}
