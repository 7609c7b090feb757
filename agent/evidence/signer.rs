//! The signing key out of reach of the video: `ioc-agent signer` holds the
//! key in its own process, as its own user (`ioc-signer` in the shipped
//! unit), and signs over a Unix socket; the agent, which parses untrusted
//! RTSP and video from every camera, never reads the key. A compromised
//! agent can still ask for signatures while it runs (the signer logs each
//! one with its sha256), but it cannot take the key away: evidence signed
//! after the compromise is fixed can be trusted again without re-keying
//! every IOC.
//!
//! Protocol: one JSON line per request, one JSON line back.
//! `{"op":"public_key"}` → `{"public_key":"<hex>"}`;
//! `{"op":"sign","data":"<hex>"}` → `{"signature":"<hex>"}`;
//! failures → `{"error":"…"}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sign::{Sign, SignError};

/// Largest message the signer signs (manifests and reviews are a few KiB).
pub const MAX_DATA: usize = 256 * 1024;

#[derive(Serialize, Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    data: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A signer reached over its socket.
#[derive(Debug, Clone)]
pub struct Remote {
    socket: PathBuf,
    public: VerifyingKey,
}

fn err(socket: &Path, m: impl std::fmt::Display) -> SignError {
    SignError::Io {
        path: socket.to_path_buf(),
        message: format!(
            "signer: {m} — is the signer running (systemctl status ioc-agent-signer) and may this user open its socket?"
        ),
    }
}

fn ask(socket: &Path, req: &Request) -> Result<Reply, SignError> {
    let mut s = UnixStream::connect(socket).map_err(|e| err(socket, e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| err(socket, e))?;
    let mut line = serde_json::to_vec(req).map_err(|e| err(socket, e))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| err(socket, e))?;
    let mut reply = String::new();
    BufReader::new(s.take(64 * 1024))
        .read_line(&mut reply)
        .map_err(|e| err(socket, e))?;
    let r: Reply = serde_json::from_str(&reply).map_err(|_| err(socket, "no answer"))?;
    match r.error {
        Some(e) => Err(err(socket, e)),
        None => Ok(r),
    }
}

impl Remote {
    /// Connects to the signer at `socket` and learns its public key,
    /// retrying for up to `wait` (the signer may still be starting).
    pub fn connect(socket: &Path, wait: Duration) -> Result<Remote, SignError> {
        let start = std::time::Instant::now();
        loop {
            let r = ask(
                socket,
                &Request {
                    op: "public_key".into(),
                    data: String::new(),
                },
            )
            .and_then(|r| {
                let hex_key = r.public_key.ok_or_else(|| err(socket, "no public key"))?;
                super::sign::parse_public_key(&hex_key).map_err(|e| err(socket, e))
            });
            match r {
                Ok(public) => {
                    return Ok(Remote {
                        socket: socket.to_path_buf(),
                        public,
                    });
                }
                Err(e) if start.elapsed() >= wait => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Sign for Remote {
    fn public(&self) -> VerifyingKey {
        self.public
    }

    fn sign_bytes(&self, body: &[u8]) -> Result<Signature, SignError> {
        let r = ask(
            &self.socket,
            &Request {
                op: "sign".into(),
                data: hex::encode(body),
            },
        )?;
        let sig = r
            .signature
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(|| err(&self.socket, "bad signature in the answer"))?;
        // Never trust an answer blindly: it must verify under the key we pinned.
        use ed25519_dalek::Verifier;
        self.public
            .verify(body, &sig)
            .map_err(|_| err(&self.socket, "the signature does not verify (key changed?)"))?;
        Ok(sig)
    }
}

/// The agent's signer: its own key, or the signer process.
#[derive(Debug, Clone)]
pub enum Signer {
    Local(SigningKey),
    Remote(Remote),
}

impl Sign for Signer {
    fn public(&self) -> VerifyingKey {
        match self {
            Signer::Local(k) => k.verifying_key(),
            Signer::Remote(r) => r.public,
        }
    }

    fn sign_bytes(&self, body: &[u8]) -> Result<Signature, SignError> {
        match self {
            Signer::Local(k) => Ok(k.sign(body)),
            Signer::Remote(r) => r.sign_bytes(body),
        }
    }
}

/// Answers one connection.
fn answer(key: &SigningKey, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut rd = BufReader::new(match stream.try_clone() {
        Ok(s) => s.take((MAX_DATA * 2 + 1024) as u64),
        Err(_) => return,
    });
    if rd.read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(r) if r.op == "public_key" => Reply {
            public_key: Some(hex::encode(key.verifying_key().as_bytes())),
            ..Default::default()
        },
        Ok(r) if r.op == "sign" => match hex::decode(&r.data) {
            Ok(data) if data.len() <= MAX_DATA => {
                let sig = key.sign(&data);
                tracing::info!(
                    sha256 = %hex::encode(Sha256::digest(&data)),
                    bytes = data.len(),
                    "signed"
                );
                Reply {
                    signature: Some(hex::encode(sig.to_bytes())),
                    ..Default::default()
                }
            }
            Ok(_) => Reply {
                error: Some(format!("data over {MAX_DATA} bytes")),
                ..Default::default()
            },
            Err(_) => Reply {
                error: Some("data is not hex".into()),
                ..Default::default()
            },
        },
        _ => Reply {
            error: Some("unknown request".into()),
            ..Default::default()
        },
    };
    if let Ok(mut out) = serde_json::to_vec(&reply) {
        out.push(b'\n');
        let mut s = stream;
        let _ = s.write_all(&out);
    }
}

/// Serves signatures with `key` on `socket` (mode 0660: the socket's group,
/// the agent's, may connect) until the process ends.
pub fn serve(key: SigningKey, socket: &Path) -> std::io::Result<()> {
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    }
    tracing::info!(
        socket = %socket.display(),
        key_id = %super::sign::key_id(&key.verifying_key()),
        "signer ready"
    );
    let key = std::sync::Arc::new(key);
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                let k = key.clone();
                std::thread::spawn(move || answer(&k, s));
            }
            Err(e) => {
                tracing::warn!(error = %e, "signer: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_signatures_verify_and_the_key_never_leaves() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s.sock");
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key();
        let s2 = sock.clone();
        std::thread::spawn(move || serve(key, &s2));
        let r = Remote::connect(&sock, Duration::from_secs(5)).unwrap();
        assert_eq!(r.public(), public);
        let sig = r.sign_bytes(b"manifest").unwrap();
        use ed25519_dalek::Verifier;
        assert!(public.verify(b"manifest", &sig).is_ok());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // Oversized data is refused, with a reason.
        let e = r
            .sign_bytes(&vec![0u8; MAX_DATA + 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("over"), "{e}");
        // No signer there: a clear error naming the socket and the fix.
        let e = Remote::connect(&d.path().join("none"), Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none") && e.contains("ioc-agent-signer"), "{e}");
    }
}
