//! Graceful shutdown: one cancellation token that every loop and sleep watches.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM or ctrl-c (whichever comes first). The SIGTERM handler is
/// registered before this returns, so a SIGTERM that arrives while the process is still starting
/// (a deploy that replaces a worker at once) is a clean shutdown, not the default "terminate"
/// action. Call it from inside the runtime, as early as possible.
pub fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::spawn(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
            () = term => tracing::info!("SIGTERM received, shutting down"),
            () = token.cancelled() => return,
        }
        token.cancel();
    });
}
