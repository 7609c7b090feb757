//! `ioc-agent watch`: a subscriber that prints alerts and agent status as
//! readable lines (for installers, the demo and operators at a terminal).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::{BrokerAddress, MqttSettings};

/// One readable line for an alert JSON, or `None` if it is not an alert.
pub fn alert_line(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let empty = serde_json::Value::Null;
    let obj = v
        .get("objects")
        .and_then(|o| o.as_array())
        .and_then(|o| o.first())
        .unwrap_or(&empty);
    let time = v.get("time")?.as_str()?;
    let time = time.get(11..23).unwrap_or(time);
    let place = match (
        v.get("zone").and_then(|z| z.as_str()),
        v.get("line").and_then(|l| l.as_str()),
    ) {
        (Some(z), _) => format!("zone {z}"),
        (_, Some(l)) => format!(
            "line {l} {}",
            v.get("direction").and_then(|d| d.as_str()).unwrap_or("")
        ),
        _ => String::new(),
    };
    let mut extra = String::new();
    for k in [
        "lane",
        "phase",
        "count",
        "speed_kmh",
        "dwell_secs",
        "confidence",
    ] {
        if let Some(x) = v.get(k) {
            extra.push_str(&format!(
                " {k}={}",
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            ));
        }
    }
    if let Some(sig) = v.get("signal") {
        extra.push_str(&format!(
            " signal={}/{}",
            sig["state"].as_str().unwrap_or("?"),
            sig["source"].as_str().unwrap_or("?")
        ));
    }
    if let Some(pl) = v.get("plate") {
        extra.push_str(&format!(
            " plate={}{}",
            pl["text"].as_str().unwrap_or("?"),
            if pl["valid"] == true { "" } else { "(?)" }
        ));
    }
    let thumb = v
        .get("thumbnail")
        .map(|t| format!(" thumbnail {}x{}", t["width"], t["height"]))
        .unwrap_or_default();
    // The names an operator reads, Vietnamese then English, and where.
    let names = match (
        v.get("name_vi")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty()),
        v.get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty()),
    ) {
        (Some(vi), Some(en)) => format!(" \"{vi} / {en}\""),
        (Some(n), None) | (None, Some(n)) => format!(" \"{n}\""),
        (None, None) => String::new(),
    };
    let at = v
        .get("place")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(|n| format!(" @ {n}"))
        .unwrap_or_default();
    Some(format!(
        "{time} {agent}/{camera} {kind:<18}{names}{at} {class} {score:.2} track {track} {place}{extra}{thumb}  [{id}]",
        agent = v.get("agent_id")?.as_str()?,
        camera = v.get("camera")?.as_str()?,
        kind = v.get("type")?.as_str()?,
        class = obj.get("class").and_then(|c| c.as_str()).unwrap_or("-"),
        score = obj.get("score").and_then(|c| c.as_f64()).unwrap_or(0.0),
        track = obj.get("track_id").unwrap_or(&empty),
        id = v.get("id")?.as_str()?,
    ))
}

/// One readable line for an `ioc.event_update/1` message, or `None`.
pub fn update_line(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("schema")?.as_str()? != super::payload::UPDATE_SCHEMA {
        return None;
    }
    let time = v.get("time")?.as_str()?;
    let time = time.get(11..23).unwrap_or(time);
    let head = format!(
        "{time} {}/{} {:<18}",
        v.get("agent_id")?.as_str()?,
        v.get("camera")?.as_str()?,
        v.get("type")?.as_str()?
    );
    let event = v.get("event_id")?.as_str()?;
    match v.get("kind")?.as_str()? {
        "evidence" => {
            let e = v.get("evidence")?;
            let clip = e
                .get("clip")
                .map(|c| {
                    format!(
                        "clip {} frames {:.1} s (pre {:.1} s){}",
                        c["frames"],
                        c["duration_secs"].as_f64().unwrap_or(0.0),
                        c["pre_secs"].as_f64().unwrap_or(0.0),
                        if c["pre_truncated"] == true {
                            " truncated"
                        } else {
                            ""
                        }
                    )
                })
                .unwrap_or_else(|| "no clip".into());
            let files = e
                .get("files")
                .and_then(|f| f.as_array())
                .map_or(0, |f| f.len());
            Some(format!(
                "EVIDENCE {head} {clip}, {files} files signed, {}  [{event}]",
                e.get("url_path").and_then(|u| u.as_str()).unwrap_or("")
            ))
        }
        "review" => {
            let r = v.get("review")?;
            Some(format!(
                "REVIEW {head} {} {}  [{event}]",
                r.get("status")?.as_str()?,
                r.get("note").and_then(|n| n.as_str()).unwrap_or("")
            ))
        }
        _ => None,
    }
}

/// Subscribes and prints until the process is stopped. It connects with
/// the agent's own connection code (broker address, TLS, login) from `m`;
/// `say` words its errors for the caller (the `[mqtt]` keys or the flags
/// that stand for them).
pub async fn watch(m: &MqttSettings, say: &dyn Fn(String) -> String) -> Result<(), String> {
    watch_with(m, say, &|_| None, false).await
}

/// As [`watch`]; `on_evidence` is given each sealed-evidence update and may
/// return a line to print under it (`watch --verify` checks the folder);
/// `qos0` subscribes at QoS 0 (no session state on the broker).
pub async fn watch_with(
    m: &MqttSettings,
    say: &dyn Fn(String) -> String,
    on_evidence: &dyn Fn(&serde_json::Value) -> Option<String>,
    qos0: bool,
) -> Result<(), String> {
    let qos = if qos0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let addr = BrokerAddress::parse(&m.url)?;
    let prefix = m.topic_prefix.as_str();
    let opts = super::connection_options(m).map_err(say)?;
    let (client, mut events) = AsyncClient::new(opts, 16);
    let mut backoff =
        crate::base::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                for filter in [
                    format!("{prefix}/+/events"),
                    format!("{prefix}/+/events/+/+"),
                ] {
                    client
                        .subscribe(filter, qos)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                client
                    .subscribe(format!("{prefix}/+/status"), qos)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic.contains("/events") && !p.topic.ends_with("/thumbnail") {
                    if let Some(l) = update_line(&p.payload) {
                        println!("{l}");
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        if v["kind"] == "evidence"
                            && let Some(more) = on_evidence(&v)
                        {
                            println!("{more}");
                        }
                        continue;
                    }
                    match alert_line(&p.payload) {
                        Some(l) => println!("ALERT  {l}"),
                        None => println!("ALERT  (unreadable payload on {})", p.topic),
                    }
                } else if p.topic.ends_with("/status") {
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    let cams = v
                        .get("cameras")
                        .and_then(|c| c.as_object())
                        .map(|m| {
                            m.iter()
                                .map(|(k, c)| {
                                    format!(
                                        "{k}={}",
                                        c.get("state").and_then(|s| s.as_str()).unwrap_or("?")
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    println!(
                        "STATUS {} {} {}",
                        v.get("agent_id").and_then(|s| s.as_str()).unwrap_or("?"),
                        v.get("state").and_then(|s| s.as_str()).unwrap_or("?"),
                        cams
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                let d = backoff.next_delay();
                eprintln!(
                    "watch: broker {}://{}:{}: {}; retrying in {:.1} s",
                    if addr.tls { "mqtts" } else { "mqtt" },
                    addr.host,
                    addr.port,
                    say(super::describe(&e)),
                    d.as_secs_f64()
                );
                tokio::time::sleep(d).await;
            }
        }
    }
}
