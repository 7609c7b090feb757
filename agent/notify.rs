//! systemd readiness and watchdog (`Type=notify`, `WatchdogSec=`): datagrams
//! to `$NOTIFY_SOCKET`. Without systemd every call is a no-op.

use std::time::Duration;

fn send(msg: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        send_to(&path, msg);
    }
}

fn send_to(path: &std::ffi::OsStr, msg: &str) {
    #[cfg(unix)]
    {
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let bytes = path.as_encoded_bytes();
        let res = if let Some(name) = bytes.strip_prefix(b"@") {
            // Abstract socket namespace (Linux).
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                Ok(0)
            }
        } else {
            sock.send_to(msg.as_bytes(), std::path::Path::new(&path))
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// Startup finished (models loaded, cameras supervised).
pub fn ready() {
    send("READY=1\nSTATUS=running");
}

/// A config reload began (`READY=1` follows).
pub fn reloading() {
    send("RELOADING=1");
}

pub fn stopping() {
    send("STOPPING=1");
}

/// "Still alive" for `WatchdogSec=`.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// Half the watchdog period systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        send_to(p.as_os_str(), "READY=1\nSTATUS=running");
        send_to(p.as_os_str(), "WATCHDOG=1");
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=running");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert_eq!(
            interval_from(Some("30000000"), None),
            Some(Duration::from_secs(15))
        );
        assert_eq!(interval_from(Some("30000000"), Some("1")), None); // another process's watchdog
        assert_eq!(interval_from(None, None), None);
    }
}
