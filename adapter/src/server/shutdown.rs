//! Signals and the graceful drain shared by `derm-adapter serve`, its demo and `derm-extender`.

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once `rx` says stop (or its sender is gone, which also means stop).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Waits for SIGINT or SIGTERM.
pub async fn signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

/// After the first signal (the caller has marked itself not ready): stops the API server and
/// waits for its in-flight requests, then stops the admin port, which outlives the API so
/// probes see "not ready" rather than a refused connection. A second signal aborts.
pub async fn drain(
    api_stop: &watch::Sender<bool>,
    api_task: JoinHandle<()>,
    admin_stop: &watch::Sender<bool>,
    admin_task: JoinHandle<()>,
) -> anyhow::Result<()> {
    api_stop.send_replace(true);
    let drain = async {
        api_task.await.context("API server task")?;
        admin_stop.send_replace(true);
        admin_task.await.context("admin server task")
    };
    tokio::select! {
        result = drain => result,
        result = signal() => {
            result.context("cannot listen for signals")?;
            anyhow::bail!("second signal: aborting without draining")
        }
    }
}
