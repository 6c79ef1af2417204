//! The connection layer of `rnmt-serve`: accepting TCP connections, and what bounds the
//! resources one client can hold.
//!
//! * **Connection cap** ([`ConnLimits::max_connections`]): at most this many connections are
//!   open at once; one accepted beyond it is closed at once, so the process never runs out of
//!   file descriptors and the memory of buffered request bodies stays bounded (connections x
//!   `--max-body-bytes`).
//! * **Header timeout** ([`ConnLimits::header_timeout`]): a connection must deliver a complete
//!   request head within this time of being opened or of its previous response (hyper's header
//!   read timer), else it is closed. This ends idle connections, keep-alive connections left
//!   open, and clients trickling a partial head.
//! * The **body timeout** is the handler's (see [`crate::serve::App::body_timeout`]): a body
//!   not complete in time is answered 408.
//!
//! Shutdown is graceful: on the signal the listener closes, idle connections close, and the
//! requests in flight finish before [`serve`] returns.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once at most.
    pub max_connections: usize,
    /// Time to deliver a request head, from the connection's start or its previous response.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 128,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then waits for the
/// open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before it was accepted: go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: closed at once
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots
        .acquire_many(limits.max_connections.max(1) as u32)
        .await;
}
