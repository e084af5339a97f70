//! Hosting the router and the workers in one process, as `slipway serve` and
//! `slipway demo` do: serve HTTP on a listener, run the workers (each queue's messages up to
//! [`worker::Options::concurrency`](crate::worker::Options) at once), and on shutdown stop
//! taking requests, let in-flight ones finish, then stop the workers once every message they
//! hold is handled.

use std::future::Future;

use tokio::net::TcpListener;

use crate::app::App;

/// Serves `app` on `listener` with workers until `shutdown` resolves.
pub async fn run(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_workers, stopped) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(crate::worker::run(
        app.clone(),
        crate::worker::Options::default(),
        stopped,
    ));
    let router = crate::http::router(app);
    // The peer's address is what `[dashboard] auth = "proxy"` checks the proxy by.
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    let _ = stop_workers.send(true);
    if let Err(e) = workers.await {
        tracing::error!(error = %e, "a worker task ended abnormally");
    }
    served
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests and messages");
}
