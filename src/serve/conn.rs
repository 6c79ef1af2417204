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
//! * **Write timeout** ([`ConnLimits::write_timeout`]): a write to a client that has not
//!   taken a byte for this long fails and the connection is closed, so a client that stops
//!   reading holds its slot and its response (hyper handles one request of a connection at a
//!   time: at most one response is buffered per connection) only this long.
//! * **Per-client cap** and the **overflow lane** for `/health`: see [`super::overflow`].
//! * The **body timeout** is the handler's (see [`crate::serve::App::body_timeout`]): a body
//!   not complete in time is answered 408.
//!
//! Shutdown is graceful: on the signal the listener closes, idle connections close, and the
//! requests in flight finish before [`serve`] returns.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    /// Connections of one client address at most (see [`super::overflow`]).
    pub max_client_connections: usize,
    /// Time a write may wait for the client to take bytes.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 128,
            header_timeout: Duration::from_secs(10),
            max_client_connections: 64,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Set on a connection whose request head named both `Content-Length` and
/// `Transfer-Encoding` (hyper drops the `Content-Length` before the handlers see the head, so
/// the bytes are watched as they arrive: [`Sniff`]). A request carries it as an extension, and
/// [`crate::serve::router`] answers 400 and closes the connection.
#[derive(Debug, Clone, Default)]
pub struct AmbiguousFraming(pub Arc<AtomicBool>);

impl AmbiguousFraming {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A stream that watches the header names of the bytes read from it: between two blank lines
/// (one request head), a `Content-Length` and a `Transfer-Encoding` line both present set the
/// connection's [`AmbiguousFraming`]. A JSON body has no such lines (its strings cannot hold a
/// raw line break), so bodies never set it.
pub struct Sniff<S> {
    inner: S,
    write_timeout: Duration,
    /// Running while a write waits for the client.
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    flag: AmbiguousFraming,
    name: Vec<u8>,
    in_name: bool,
    line_empty: bool,
    seen_cl: bool,
    seen_te: bool,
}

impl<S> Sniff<S> {
    pub fn new(inner: S, flag: AmbiguousFraming, write_timeout: Duration) -> Self {
        Sniff {
            inner,
            write_timeout,
            write_timer: None,
            flag,
            name: Vec::with_capacity(24),
            in_name: true,
            line_empty: true,
            seen_cl: false,
            seen_te: false,
        }
    }

    /// A write made no progress: `Pending` until the write timeout, then an error.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.write_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Keeps the timer of a write that made progress from firing.
    fn progressed<T>(&mut self, p: Poll<T>) -> Poll<T> {
        if p.is_ready() {
            self.write_timer = None;
        }
        p
    }

    fn watch(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self.line_empty {
                    self.seen_cl = false;
                    self.seen_te = false;
                }
                self.name.clear();
                self.in_name = true;
                self.line_empty = true;
                continue;
            }
            if b != b'\r' {
                self.line_empty = false;
            }
            if !self.in_name {
                continue;
            }
            if b == b':' {
                let name = self.name.trim_ascii();
                self.seen_cl |= name.eq_ignore_ascii_case(b"content-length");
                self.seen_te |= name.eq_ignore_ascii_case(b"transfer-encoding");
                if self.seen_cl && self.seen_te {
                    self.flag.0.store(true, Ordering::SeqCst);
                }
                self.in_name = false;
            } else if self.name.len() < 24 {
                self.name.push(b);
            } else {
                self.in_name = false;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            self.watch(&new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            ready => self.progressed(ready),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            ready => self.progressed(ready),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
    let lane = Arc::new(Semaphore::new(super::overflow::OVERFLOW_LANE));
    let clients = super::overflow::Clients::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                // Out of descriptors or a connection reset before it was accepted: go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let client = clients.try_add(peer.ip(), limits.max_client_connections.max(1));
        let slot = slots.clone().try_acquire_owned().ok();
        let (Some(client), Some(slot)) = (client, slot) else {
            // Over a cap: the overflow lane answers /health, or the connection is closed.
            if let Ok(turn) = lane.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    super::overflow::serve_overflow(stream).await;
                    drop(turn);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let framing = AmbiguousFraming::default();
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(framing.clone())));
        let stream = Sniff::new(stream, framing, limits.write_timeout);
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
            drop(client);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots
        .acquire_many(limits.max_connections.max(1) as u32)
        .await;
}
