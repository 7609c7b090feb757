//! A ward's uplink, cut on demand: a loopback TCP relay in front of each
//! broker address of one simulated agent. While the link is cut, bytes are
//! read and thrown away both ways (a link gone dark: writes succeed, nothing
//! arrives, nobody is told) and new connections get no answer; a connection
//! that lived through a cut stays dark, as a real one would have timed out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Link {
    cut: AtomicBool,
    /// Counts cuts; a connection forwards only in the epoch it began in.
    epoch: AtomicU64,
}

impl Link {
    pub fn cut(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn live(&self, epoch: u64) -> bool {
        !self.cut.load(Ordering::SeqCst) && self.epoch.load(Ordering::SeqCst) == epoch
    }
}

/// A relay to `upstream` (`host:port`); its own `mqtt://127.0.0.1:port`.
pub async fn relay(link: Arc<Link>, upstream: String) -> std::io::Result<String> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("mqtt://{}", l.local_addr()?);
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let (link, upstream) = (link.clone(), upstream.clone());
            tokio::spawn(async move {
                let epoch = link.epoch.load(Ordering::SeqCst);
                if !link.live(epoch) {
                    return swallow(down).await;
                }
                let Ok(up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::join!(
                    pump(dr, uw, link.clone(), epoch),
                    pump(ur, dw, link.clone(), epoch)
                );
            });
        }
    });
    Ok(url)
}

async fn swallow(mut s: TcpStream) {
    let mut b = vec![0u8; 16 << 10];
    while let Ok(n) = s.read(&mut b).await {
        if n == 0 {
            break;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    epoch: u64,
) {
    let mut b = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if link.live(epoch) && to.write_all(&b[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `mqtt://host:port` → `host:port`.
pub fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .split_once("://")
        .map(|(s, r)| (s, r.trim_end_matches('/')))
        .filter(|(s, _)| *s == "mqtt")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{url}: --cut-ward-link relays plain mqtt://host:port only"))?;
    Ok(rest.to_string())
}
