//! `derm-adapter`: see the library crate for what it serves and how.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Servers pass their provider explicitly; this default covers any other rustls user.
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    derm_adapter::run(derm_adapter::cli::Args::parse()).await
}
