//! `derm-extender`: see the library crate for what it serves and how.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Servers pass their provider explicitly; this default covers the kube client's rustls.
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    derm_extender::run(derm_extender::cli::Args::parse()).await
}
