//! The connection loop: a cap on open connections, a deadline for a client
//! to send its request headers (and to finish a TLS handshake), and TLS.
//!
//! A box on a ward's LAN must keep answering `/metrics` and the review page,
//! and keep file descriptors for its cameras and evidence, while somebody
//! holds thousands of idle connections open. So:
//! - at most `max_connections` connections are served at once;
//! - at the cap, a new connection evicts the oldest one that has not sent a
//!   request yet (an idle or slow-loris connection), so a real client that
//!   sends its request at once is always served; when every connection is
//!   busy with a request, the new one is closed;
//! - a connection must deliver its request headers within `header_timeout`
//!   (also between requests on a kept-alive connection), and a TLS client
//!   must finish its handshake within it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How connections are accepted.
#[derive(Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Serve HTTPS with this config (certificate and key loaded).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// Connection counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Idle connections closed to make room at the cap.
    pub evicted: AtomicU64,
    /// Connections closed at once because every slot was busy.
    pub refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: AtomicU64,
}

/// Connections that have not sent a request yet, oldest first.
#[derive(Default)]
struct Waiting(Mutex<BTreeMap<u64, CancellationToken>>);

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Serves `app` on `listener` until `cancel` fires; open connections then
/// get up to 5 s to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    counters: Arc<ConnCounters>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let waiting = Arc::new(Waiting::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut next_id = 0u64;
    let mut last_accept_warning: Option<std::time::Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so at most every 10 s.
                    if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "http: cannot accept a connection");
                        last_accept_warning = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let victim = waiting.lock().pop_first();
                let Some((_, idle)) = victim else {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    drop(tcp);
                    continue;
                };
                idle.cancel();
                counters.evicted.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let id = next_id;
        next_id += 1;
        let idle = CancellationToken::new();
        waiting.lock().insert(id, idle.clone());
        let conn = Conn {
            id,
            peer,
            app: app.clone(),
            header_timeout: opts.header_timeout,
            waiting: waiting.clone(),
            idle,
            cancel: cancel.clone(),
            counters: counters.clone(),
        };
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            conn.counters.open.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => conn.run(tcp).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(conn.header_timeout, acceptor.accept(tcp));
                    let stream = tokio::select! {
                        _ = conn.idle.cancelled() => None,
                        r = handshake => match r {
                            Ok(Ok(s)) => Some(s),
                            _ => {
                                conn.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                        },
                    };
                    if let Some(s) = stream {
                        conn.run(s).await;
                    }
                }
            }
            conn.waiting.lock().remove(&conn.id);
            conn.counters.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    waiting: Arc<Waiting>,
    /// Fired to evict this connection while it has sent no request.
    idle: CancellationToken,
    cancel: CancellationToken,
    counters: Arc<ConnCounters>,
}

impl Conn {
    async fn run<IO>(&self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::new(AtomicBool::new(false));
        let (app, peer, waiting, id) = (self.app.clone(), self.peer, self.waiting.clone(), self.id);
        let st = started.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                if !st.swap(true, Ordering::Relaxed) {
                    // Serving a request: no longer an idle connection to evict.
                    waiting.lock().remove(&id);
                }
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = self.idle.cancelled(), if !started.load(Ordering::Relaxed) => {}
            _ = self.cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            }
        }
    }
}

/// Loads a PEM certificate chain and private key for HTTPS.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "http.tls_cert_file {}: {e} — give a PEM certificate chain readable by the service user",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "http.tls_cert_file {}: no certificate in it — give a PEM file with BEGIN CERTIFICATE blocks",
            cert.display()
        ));
    }
    let pk = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "http.tls_key_file {}: {e} — give the certificate's PEM private key, readable by the service user (0640 root:ioc-agent)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, pk)
        .map_err(|e| {
            format!(
                "http.tls_cert_file / tls_key_file: {e} — the key must belong to the certificate"
            )
        })?;
    Ok(Arc::new(cfg))
}
