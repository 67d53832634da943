//! Serving connections with the limits and timeouts `axum::serve` does not offer.
//!
//! At most `max_connections` connections are served at once; further ones wait in the
//! listen queue until one ends. A request's header must arrive within
//! `header_timeout_seconds` of the server starting to wait for it (hyper's header read
//! timeout; it also ends kept-alive connections that send no next request). A
//! connection that moves no byte for `idle_timeout_seconds` while none of its requests is
//! being handled is closed (an answer the client does not take), and a request body
//! that stalls that long fails the request. A request being handled is never cut: a
//! fetch may take long without any byte on the connection. On shutdown, accepting stops,
//! idle connections close and running requests finish.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::config::ServerConfig;

/// Serves `router` on `listener` until `shutdown` resolves, then lets running requests
/// finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let idle = Duration::from_secs(limits.idle_timeout_seconds.max(1));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_seconds.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%error, "Cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let router = router.clone();
            hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
                let handling = Handling::start(activity.clone());
                let request = request.map(|body| Body::new(TimeoutBody::new(idle, body)));
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    drop(handling);
                    response
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            let _permit = permit;
            close_when_idle(connection, &activity, idle).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Drives `connection` until it ends or stays idle for `idle`.
async fn close_when_idle<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    activity: &Activity,
    idle: Duration,
) {
    let mut connection = pin!(connection);
    loop {
        let wake = if activity.handling() {
            Instant::now() + idle
        } else {
            activity.last() + idle
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "Connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if !activity.handling() && activity.last() + idle <= Instant::now() {
                    tracing::debug!("Closed an idle connection");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn handling(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }
}

/// A request being handled; the idle clock starts again when it ends.
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Handling(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that records when it last moved a byte.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
