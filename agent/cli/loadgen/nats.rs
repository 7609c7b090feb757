//! The IOC's consumer on a NATS cluster: one durable pull consumer shared
//! by several workers — what MQTT 5 shared subscriptions are elsewhere (NATS
//! speaks MQTT 3.1.1 only, and has no `$share`). Each message goes to one
//! worker, is acknowledged after it is recorded, and comes again (to any
//! worker) if the ack is lost: at least once, de-duplicated by alert id.
//!
//! The consumer reads NATS's own MQTT stream, `$MQTT_msgs`, filtered to the
//! alert topics. NATS acknowledges an MQTT QoS 1 publish (PUBACK) only once
//! the message is stored there, replicated on the cluster; a stream of our
//! own on the plain subject `ioc.v1.*.events` would be fed fire-and-forget
//! and miss what arrives while its leader moves (measured: 31 of 50 alerts
//! raised in the 5 s after a node was killed never reached it, all
//! acknowledged to their agents). `$MQTT_msgs` keeps a message while a
//! consumer is interested, so the durable consumer is made before the
//! agents publish and then stays.
//!
//! A minimal client of the NATS text protocol (INFO/CONNECT, PUB, SUB,
//! MSG/HMSG, PING/PONG): enough for JetStream's request/reply API.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// NATS's stream of MQTT QoS 1 messages, and the IOC's durable consumer on
/// it.
pub const STREAM: &str = "$MQTT_msgs";
pub const DURABLE: &str = "ioc";
/// The alert topics `ioc/v1/<agent>/events`, as stored in [`STREAM`].
pub const FILTER: &str = "$MQTT.msgs.ioc.v1.*.events";

/// One message off the wire.
#[derive(Debug)]
pub enum Incoming {
    Msg {
        subject: String,
        reply: Option<String>,
        /// The status line of a header block (`404`, `408`, …), if any.
        status: Option<u16>,
        payload: Vec<u8>,
    },
    Ping,
    Other,
}

pub struct Conn {
    rd: tokio::net::tcp::OwnedReadHalf,
    /// Bytes read and not yet parsed: reads go here, so waiting for the
    /// next message can be given up at any point without losing any.
    buf: Vec<u8>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    sid: u64,
}

/// `nats://host:port` → `host:port`.
pub fn addr(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or_else(|| format!("{url}: a NATS address is nats://host:port"))?;
    if rest.is_empty() || !rest.contains(':') {
        return Err(format!("{url}: a NATS address is nats://host:port"));
    }
    Ok(rest.trim_end_matches('/').to_string())
}

impl Conn {
    pub async fn connect(url: &str) -> Result<Conn, String> {
        let a = addr(url)?;
        let s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&a))
            .await
            .map_err(|_| format!("{a}: connect timed out"))?
            .map_err(|e| format!("{a}: {e}"))?;
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        let mut c = Conn {
            rd: r,
            buf: Vec::new(),
            wr: w,
            sid: 0,
        };
        let mut line = String::new();
        c.read_line(&mut line).await?;
        if !line.starts_with("INFO ") {
            return Err(format!("{a}: not a NATS server (said {:?})", line.trim()));
        }
        c.write(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"ioc-agent\",\"protocol\":1,\"headers\":true,\"no_responders\":true}\r\nPING\r\n",
        )
        .await?;
        loop {
            line.clear();
            c.read_line(&mut line).await?;
            if line.starts_with("PONG") {
                return Ok(c);
            }
            if line.starts_with("-ERR") {
                return Err(format!("{a}: {}", line.trim()));
            }
        }
    }

    /// More bytes into `buf` (cancel-safe: a read given up reads nothing).
    async fn fill(&mut self) -> Result<(), String> {
        let mut b = [0u8; 64 << 10];
        let n = tokio::time::timeout(Duration::from_secs(10), self.rd.read(&mut b))
            .await
            .map_err(|_| "NATS server silent for 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("NATS server closed the connection".into());
        }
        self.buf.extend_from_slice(&b[..n]);
        Ok(())
    }

    /// One protocol line (without CRLF), once it is all in.
    async fn read_line(&mut self, line: &mut String) -> Result<(), String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                line.push_str(&String::from_utf8_lossy(&self.buf[..i]));
                self.buf.drain(..i + 2);
                return Ok(());
            }
            if self.buf.len() > 64 << 10 {
                return Err("a NATS protocol line over 64 KiB".into());
            }
            self.fill().await?;
        }
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), String> {
        self.wr.write_all(b).await.map_err(|e| e.to_string())
    }

    pub async fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<(), String> {
        let head = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        };
        let mut b = head.into_bytes();
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        self.write(&b).await
    }

    pub async fn subscribe(&mut self, subject: &str) -> Result<u64, String> {
        self.sid += 1;
        let sid = self.sid;
        self.write(format!("SUB {subject} {sid}\r\n").as_bytes())
            .await?;
        Ok(sid)
    }

    /// The next message, or `None` when none is whole within `wait`
    /// (nothing is lost: it stays buffered for the next call).
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Incoming>, String> {
        let t = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = parse(&mut self.buf)? {
                if let Incoming::Ping = m {
                    self.write(b"PONG\r\n").await?;
                }
                return Ok(Some(m));
            }
            match tokio::time::timeout_at(t, self.fill()).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            }
        }
    }

    /// The next message, answering the server's PINGs on the way.
    pub async fn next(&mut self) -> Result<Incoming, String> {
        self.next_within(Duration::from_secs(10))
            .await?
            .ok_or_else(|| "NATS server silent for 10 s".to_string())
    }

    /// A JetStream API request: its JSON answer, or the API's error.
    pub async fn request(
        &mut self,
        subject: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let inbox = format!("_INBOX.{}", ulid::Ulid::new());
        self.subscribe(&inbox).await?;
        self.publish(subject, Some(&inbox), body.to_string().as_bytes())
            .await?;
        loop {
            if let Incoming::Msg {
                subject: s,
                status,
                payload,
                ..
            } = self.next().await?
            {
                if s != inbox {
                    continue;
                }
                if status == Some(503) {
                    return Err(format!("{subject}: JetStream is not available (503)"));
                }
                let v: serde_json::Value = serde_json::from_slice(&payload)
                    .map_err(|e| format!("{subject}: answer not JSON: {e}"))?;
                return Ok(v);
            }
        }
    }
}

/// The durable consumer (idempotent). `$MQTT_msgs` exists once an MQTT
/// client has connected to the cluster.
pub async fn ensure(url: &str) -> Result<(), String> {
    let mut c = Conn::connect(url).await?;
    let v = c
        .request(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{DURABLE}"),
            &serde_json::json!({
                "stream_name": STREAM,
                "config": {
                    "durable_name": DURABLE,
                    "filter_subject": FILTER,
                    "ack_policy": "explicit",
                    "deliver_policy": "all",
                    "ack_wait": 10_000_000_000u64,
                    "max_ack_pending": 20_000,
                }
            }),
        )
        .await?;
    if let Some(e) = v.get("error") {
        return Err(format!("creating consumer {DURABLE} on {STREAM}: {e}"));
    }
    Ok(())
}

/// The consumer's and the stream's state as the cluster reports them
/// (`CONSUMER.INFO`, `STREAM.INFO`): what is still pending or unacknowledged
/// when a run ends, and how much the stream holds.
pub async fn state(urls: &[String]) -> serde_json::Value {
    for url in urls {
        let Ok(mut c) = Conn::connect(url).await else {
            continue;
        };
        let (Ok(ci), Ok(si)) = (
            info(&mut c, &format!("$JS.API.CONSUMER.INFO.{STREAM}.{DURABLE}")).await,
            info(&mut c, &format!("$JS.API.STREAM.INFO.{STREAM}")).await,
        ) else {
            continue;
        };
        return serde_json::json!({
            "num_pending": ci["num_pending"],
            "num_ack_pending": ci["num_ack_pending"],
            "num_redelivered": ci["num_redelivered"],
            "delivered_stream_seq": ci["delivered"]["stream_seq"],
            "ack_floor_stream_seq": ci["ack_floor"]["stream_seq"],
            "stream_messages": si["state"]["messages"],
            "stream_last_seq": si["state"]["last_seq"],
            "stream_consumers": si["state"]["consumer_count"],
            "stream_leader": si["cluster"]["leader"],
            "consumer_leader": ci["cluster"]["leader"],
        });
    }
    serde_json::Value::Null
}

async fn info(c: &mut Conn, subject: &str) -> Result<serde_json::Value, String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        c.request(subject, &serde_json::json!({})),
    )
    .await
    .unwrap_or_else(|_| Err(format!("{subject}: no answer in 5 s")))
}

/// One worker: pulls batches off the shared durable consumer, hands each
/// payload to `on_msg` and acknowledges it. On a lost node it moves to the
/// next of `urls`; it never returns.
pub async fn worker(urls: Vec<String>, first: usize, mut on_msg: impl FnMut(&[u8], u64)) {
    let mut i = first;
    loop {
        let url = &urls[i % urls.len()];
        i += 1;
        match serve(url, &mut on_msg).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(node = %url, "IOC consumer: {e}; next node");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

async fn serve(url: &str, on_msg: &mut impl FnMut(&[u8], u64)) -> Result<(), String> {
    let mut c = Conn::connect(url).await?;
    let inbox = format!("_INBOX.{}", ulid::Ulid::new());
    c.subscribe(&inbox).await?;
    let next = format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}");
    const BATCH: u64 = 256;
    let pull = serde_json::json!({"batch": BATCH, "expires": 2_000_000_000u64})
        .to_string()
        .into_bytes();
    // Pulls that got no answer at all, in a row: three (9 s) and the node
    // is taken for gone.
    let mut silent = 0;
    loop {
        c.publish(&next, Some(&inbox), &pull).await?;
        let mut got = 0;
        let mut answered = false;
        while got < BATCH {
            // A pull ends with a status (408 at its expiry); one that
            // got lost (its node went) is simply asked again.
            let Some(m) = c.next_within(Duration::from_secs(3)).await? else {
                break;
            };
            answered = true;
            match m {
                Incoming::Msg {
                    status: Some(s), ..
                } => {
                    // 404 no messages, 408 the pull expired, 409 over a
                    // limit: ask again.
                    if s == 503 {
                        return Err("JetStream not available on this node".into());
                    }
                    break;
                }
                Incoming::Msg {
                    reply: Some(ack),
                    payload,
                    ..
                } => {
                    on_msg(&payload, stream_seq(&ack).unwrap_or(0));
                    c.publish(&ack, None, b"").await?;
                    got += 1;
                }
                _ => {}
            }
        }
        silent = if answered { 0 } else { silent + 1 };
        if silent >= 3 {
            return Err("no answer to three pulls in a row (9 s)".into());
        }
    }
}

/// A whole message off the front of `buf`, if one is there.
pub fn parse(buf: &mut Vec<u8>) -> Result<Option<Incoming>, String> {
    let Some(i) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 64 << 10 {
            return Err("a NATS protocol line over 64 KiB".into());
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..i]).to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |x: &str| -> Result<usize, String> {
        x.parse().map_err(|_| format!("bad NATS line {line:?}"))
    };
    // The payload after the line: `len` bytes and CRLF, once all in.
    let (sizes, reply) = match (f.first().copied(), f.len()) {
        (Some("MSG"), 4) => ((0, num(f[3])?), None),
        (Some("MSG"), 5) => ((0, num(f[4])?), Some(f[3])),
        (Some("HMSG"), 5) => ((num(f[3])?, num(f[4])?), None),
        (Some("HMSG"), 6) => ((num(f[4])?, num(f[5])?), Some(f[3])),
        (Some("PING"), _) => {
            buf.drain(..i + 2);
            return Ok(Some(Incoming::Ping));
        }
        (Some("-ERR"), _) => return Err(line.trim().to_string()),
        _ => {
            buf.drain(..i + 2);
            return Ok(Some(Incoming::Other));
        }
    };
    let (hlen, total) = sizes;
    if hlen > total || total > 64 << 20 {
        return Err(format!("bad NATS line {line:?}"));
    }
    let start = i + 2;
    if buf.len() < start + total + 2 {
        return Ok(None);
    }
    let body = buf[start..start + total].to_vec();
    let subject = f[1].to_string();
    let reply = reply.map(str::to_string);
    buf.drain(..start + total + 2);
    let status = (hlen > 0)
        .then(|| {
            String::from_utf8_lossy(&body[..hlen])
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
        })
        .flatten();
    Ok(Some(Incoming::Msg {
        subject,
        reply,
        status,
        payload: body[hlen..].to_vec(),
    }))
}

/// The stream sequence in a JetStream ack subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`):
/// the order the cluster stored messages in.
pub fn stream_seq(ack: &str) -> Option<u64> {
    let f: Vec<&str> = ack.split('.').collect();
    if f.len() < 9 || f[0] != "$JS" || f[1] != "ACK" {
        return None;
    }
    // 2.9: 9 tokens; later servers add the domain and account hash after
    // `ACK` (and a token at the end).
    let i = if f.len() == 9 { 5 } else { 7 };
    f.get(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_address_is_checked() {
        assert_eq!(addr("nats://127.0.0.1:4222").unwrap(), "127.0.0.1:4222");
        assert!(
            addr("mqtt://127.0.0.1:1883")
                .unwrap_err()
                .contains("nats://host:port")
        );
        assert!(addr("nats://").is_err());
    }

    #[test]
    fn messages_are_parsed_only_once_whole() {
        // A pull's end: a status with an empty reply field (two spaces).
        let wire = b"HMSG _INBOX.p 10  28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\nMSG t.a 10 $JS.ACK.T.c.1.7.1.1796192289716727729.1 2\r\nhi\r\nPING\r\n";
        let mut buf = Vec::new();
        let mut got = Vec::new();
        // Fed a byte at a time: nothing is taken before it is all there.
        for &b in wire.iter() {
            buf.push(b);
            while let Some(m) = parse(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(
            &got[0],
            Incoming::Msg {
                status: Some(404),
                reply: None,
                ..
            }
        ));
        match &got[1] {
            Incoming::Msg {
                subject,
                reply: Some(r),
                status: None,
                payload,
            } => {
                assert_eq!(subject, "t.a");
                assert_eq!(payload, b"hi");
                assert_eq!(stream_seq(r), Some(7));
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(got[2], Incoming::Ping));
        let mut bad = b"MSG t 1 x\r\n".to_vec();
        assert!(parse(&mut bad).is_err());
    }

    #[test]
    fn the_stream_sequence_is_read_off_the_ack_subject() {
        assert_eq!(
            stream_seq("$JS.ACK.$MQTT_msgs.ioc.1.4711.12.1733112345000000000.3"),
            Some(4711)
        );
        // Newer servers put the domain and account hash in front.
        assert_eq!(
            stream_seq("$JS.ACK.dom.acchash.$MQTT_msgs.ioc.1.99.12.1733112345000000000.0.tok"),
            Some(99)
        );
        assert_eq!(stream_seq("_INBOX.x"), None);
    }
}
