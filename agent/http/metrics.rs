//! Prometheus text exposition (version 0.0.4) of the agent's counters, built
//! at scrape time from the status board, the publisher and the evidence store.
//! Metric names are the contract of `deploy/grafana/ioc-agent.json`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::evidence::Evidence;
use crate::publish::payload::{
    CameraState, CameraStatus, LATENCY_BUCKETS_MS, LATENCY_SLO_BUCKETS_MS, StatusBoard,
};
use crate::rules::controller::Refusal;
use crate::rules::signal::SignalBoard;

/// Label value escaping (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The status board's per-camera snapshot, keyed by camera id.
type Cameras = BTreeMap<String, CameraStatus>;

/// Renders every metric.
pub fn render(
    status: &StatusBoard,
    evidence: Option<&Evidence>,
    conns: Option<&super::serve::ConnCounters>,
    signals: Option<&SignalBoard>,
) -> String {
    let cams = status.snapshot();
    let mut o = Out(String::new());
    agent_identity(&mut o, status);
    camera_counters(&mut o, &cams);
    frames_skipped(&mut o, &cams);
    camera_health(&mut o, &cams);
    latency_histograms(&mut o, &cams);
    events(&mut o, &cams);
    publisher(&mut o, status);
    if let Some(ev) = evidence {
        evidence_store(&mut o, ev);
    }
    if let Some(c) = conns {
        http_connections(&mut o, c);
    }
    if let Some(s) = signals {
        signal_messages(&mut o, s);
    }
    o.0
}

/// The HTTP server's connections: open, and closed at the cap.
fn http_connections(o: &mut Out, c: &super::serve::ConnCounters) {
    scalars(
        o,
        &[
            (
                "ioc_http_connections_open",
                "gauge",
                "HTTP connections open now.",
                load(&c.open),
            ),
            (
                "ioc_http_connections_accepted_total",
                "counter",
                "HTTP connections accepted.",
                load(&c.accepted),
            ),
            (
                "ioc_http_connections_evicted_total",
                "counter",
                "Idle HTTP connections (no request yet) closed to make room at http.max_connections.",
                load(&c.evicted),
            ),
            (
                "ioc_http_connections_refused_total",
                "counter",
                "HTTP connections closed at once: every slot was serving a request.",
                load(&c.refused),
            ),
            (
                "ioc_http_tls_handshakes_failed_total",
                "counter",
                "TLS handshakes that failed or timed out.",
                load(&c.tls_failed),
            ),
        ],
    );
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Unlabelled single-sample metrics: `(name, kind, help, value)`.
fn scalars(o: &mut Out, metrics: &[(&str, &str, &str, u64)]) {
    for &(name, kind, help, v) in metrics {
        o.head(name, kind, help);
        o.line(name, &[], v);
    }
}

/// `ioc_agent_info`, `ioc_agent_uptime_seconds`.
fn agent_identity(o: &mut Out, status: &StatusBoard) {
    o.head("ioc_agent_info", "gauge", "Agent identity; always 1.");
    o.line(
        "ioc_agent_info",
        &[
            ("agent_id", &status.agent_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    o.head(
        "ioc_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    o.line(
        "ioc_agent_uptime_seconds",
        &[],
        status.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
    );
}

/// The plain per-camera counters: frames received, decoded, inferred;
/// reconnects; alerts.
fn camera_counters(o: &mut Out, cams: &Cameras) {
    type Get = fn(&CameraStatus) -> u64;
    let per_camera: [(&str, &str, Get); 5] = [
        (
            "ioc_frames_received_total",
            "Encoded frames received from the camera.",
            |c| c.frames_received,
        ),
        ("ioc_frames_decoded_total", "Frames decoded.", |c| {
            c.frames_decoded
        }),
        (
            "ioc_frames_inferred_total",
            "Frames given to the model.",
            |c| c.frames_inferred,
        ),
        (
            "ioc_camera_reconnects_total",
            "Camera sessions that failed and were retried.",
            |c| c.reconnects,
        ),
        (
            "ioc_alerts_raised_total",
            "Alerts raised by the camera's rules.",
            |c| c.alerts,
        ),
    ];
    for (name, help, get) in per_camera {
        o.head(name, "counter", help);
        for (id, c) in cams {
            o.line(name, &[("camera", id)], get(c));
        }
    }
}

/// `ioc_frames_skipped_total`, by camera and reason.
fn frames_skipped(o: &mut Out, cams: &Cameras) {
    o.head(
        "ioc_frames_skipped_total",
        "counter",
        "Frames not given to the model, by reason (rate: not due at detect_fps; busy: replaced by a newer frame; backlog: whole GOPs dropped, decoder behind; no_keyframe: before the first keyframe; quiet: no change since the model last saw the camera, its last answer stood).",
    );
    for (id, c) in cams {
        let s = &c.frames_skipped;
        for (reason, v) in [
            ("rate", s.rate),
            ("busy", s.busy),
            ("backlog", s.backlog),
            ("no_keyframe", s.no_keyframe),
            ("quiet", s.quiet),
        ] {
            o.line(
                "ioc_frames_skipped_total",
                &[("camera", id), ("reason", reason)],
                v,
            );
        }
    }
}

/// `ioc_camera_up`, `ioc_camera_panics_total`, `ioc_ring_*`,
/// `ioc_enrichment_failures_total`.
fn camera_health(o: &mut Out, cams: &Cameras) {
    o.head(
        "ioc_camera_up",
        "gauge",
        "1 while the camera is streaming, else 0.",
    );
    for (id, c) in cams {
        o.line(
            "ioc_camera_up",
            &[("camera", id)],
            (c.state == CameraState::Streaming) as u8,
        );
    }
    o.head(
        "ioc_camera_panics_total",
        "counter",
        "Times the camera task panicked and was restarted.",
    );
    for (id, c) in cams {
        o.line("ioc_camera_panics_total", &[("camera", id)], c.panics);
    }
    o.head(
        "ioc_frames_corrupt_total",
        "counter",
        "Access units the decoder refused as damaged (skipped; the session went on).",
    );
    for (id, c) in cams {
        o.line(
            "ioc_frames_corrupt_total",
            &[("camera", id)],
            c.frames_corrupt,
        );
    }
    o.head(
        "ioc_frames_oversized_total",
        "counter",
        "Access units over 16 MiB dropped (a broken or hostile stream).",
    );
    for (id, c) in cams {
        o.line(
            "ioc_frames_oversized_total",
            &[("camera", id)],
            c.frames_oversized,
        );
    }
    o.head(
        "ioc_camera_stalls_total",
        "counter",
        "Sessions ended as not live (pictures not advancing), by reason.",
    );
    for (id, c) in cams {
        for (reason, n) in &c.stalls {
            o.line(
                "ioc_camera_stalls_total",
                &[("camera", id), ("reason", reason)],
                *n,
            );
        }
    }
    o.head(
        "ioc_ring_bytes",
        "gauge",
        "Bytes of encoded video in the camera's pre-event ring.",
    );
    for (id, c) in cams {
        if let Some(r) = &c.ring {
            o.line("ioc_ring_bytes", &[("camera", id)], r.bytes);
        }
    }
    o.head(
        "ioc_ring_budget_bytes",
        "gauge",
        "The ring's hard byte cap.",
    );
    for (id, c) in cams {
        if let Some(r) = &c.ring {
            o.line("ioc_ring_budget_bytes", &[("camera", id)], r.budget_bytes);
        }
    }
    o.head(
        "ioc_ring_cut_frames_total",
        "counter",
        "Frames cut from inside a GOP larger than the ring's cap (keyframes too rare).",
    );
    for (id, c) in cams {
        if let Some(r) = &c.ring {
            o.line("ioc_ring_cut_frames_total", &[("camera", id)], r.cut_frames);
        }
    }
    o.head(
        "ioc_enrichment_failures_total",
        "counter",
        "Optional steps (plate_read, cascade) that failed; the session went on.",
    );
    for (id, c) in cams {
        for (step, n) in &c.enrichment_failures {
            o.line(
                "ioc_enrichment_failures_total",
                &[("camera", id), ("step", step)],
                *n,
            );
        }
    }
}

/// `ioc_inference_seconds`, `ioc_frame_latency_seconds`.
fn latency_histograms(o: &mut Out, cams: &Cameras) {
    o.head(
        "ioc_inference_seconds",
        "histogram",
        "Model inference time per analysed frame.",
    );
    for (id, c) in cams {
        histogram(
            o,
            "ioc_inference_seconds",
            id,
            &LATENCY_BUCKETS_MS,
            &c.inference_hist,
            c.inference_ms_sum,
        );
    }
    o.head(
        "ioc_frame_latency_seconds",
        "histogram",
        "Frame arrival to rule decision (decode, queue, inference, tracking, rules).",
    );
    for (id, c) in cams {
        histogram(
            o,
            "ioc_frame_latency_seconds",
            id,
            &LATENCY_SLO_BUCKETS_MS,
            &c.latency_hist,
            c.latency_ms_sum,
        );
    }
}

/// One camera's histogram samples: cumulative `_bucket` lines (bounds in
/// milliseconds, shown in seconds; `counts` has one more slot, +Inf), then
/// `_sum` and `_count`.
fn histogram(
    o: &mut Out,
    name: &str,
    camera: &str,
    bounds_ms: &[f64],
    counts: &[u64],
    sum_ms: f64,
) {
    let bucket = format!("{name}_bucket");
    let mut cum = 0;
    for (b, n) in bounds_ms.iter().zip(counts) {
        cum += n;
        let le = format!("{}", b / 1000.0);
        o.line(&bucket, &[("camera", camera), ("le", &le)], cum);
    }
    cum += counts.get(bounds_ms.len()).copied().unwrap_or(0);
    o.line(&bucket, &[("camera", camera), ("le", "+Inf")], cum);
    o.line(
        &format!("{name}_sum"),
        &[("camera", camera)],
        sum_ms / 1000.0,
    );
    o.line(&format!("{name}_count"), &[("camera", camera)], cum);
}

/// `ioc_events_total`, by camera and event type.
fn events(o: &mut Out, cams: &Cameras) {
    o.head(
        "ioc_events_total",
        "counter",
        "Alerts raised, by camera and event type.",
    );
    for (id, c) in cams {
        for (t, n) in &c.events {
            o.line("ioc_events_total", &[("camera", id), ("type", t)], n);
        }
    }
}

/// The publisher's outbox and delivery counters.
fn publisher(o: &mut Out, status: &StatusBoard) {
    let p = &status.counters;
    scalars(
        o,
        &[
            (
                "ioc_outbox_rows",
                "gauge",
                "Messages waiting in the durable outbox.",
                load(&p.outbox_rows),
            ),
            (
                "ioc_outbox_bytes",
                "gauge",
                "Bytes waiting in the durable outbox.",
                load(&p.outbox_bytes),
            ),
            (
                "ioc_outbox_dropped_total",
                "counter",
                "Outbox entries dropped by the bound policy.",
                load(&p.outbox_dropped),
            ),
            (
                "ioc_outbox_quarantined_total",
                "counter",
                "Outbox messages quarantined: they cannot be delivered (too large, or refused by the broker).",
                load(&p.quarantined),
            ),
            (
                "ioc_mqtt_refused_total",
                "counter",
                "Publishes the broker refused with an MQTT 5 reason code (not delivered; kept in the outbox).",
                load(&p.refused),
            ),
            (
                "ioc_mqtt_broker_switches_total",
                "counter",
                "Moves to another broker of mqtt.url and mqtt.failover_urls (failover, and back).",
                load(&p.broker_switches),
            ),
            (
                "ioc_agent_id_conflicts_total",
                "counter",
                "Statuses of another agent process seen on this agent's own status topic: two boxes share one agent_id.",
                load(&p.agent_id_conflicts),
            ),
            (
                "ioc_thumbnails_dropped_total",
                "counter",
                "Thumbnails left out because they did not fit one packet.",
                load(&p.thumbnails_dropped),
            ),
            (
                "ioc_alerts_published_total",
                "counter",
                "Alerts the broker acknowledged.",
                load(&p.published),
            ),
            (
                "ioc_alerts_dropped_total",
                "counter",
                "Alerts lost (outbox full or not storable).",
                load(&p.dropped),
            ),
            (
                "ioc_mqtt_reconnects_total",
                "counter",
                "MQTT connections opened after the first.",
                load(&p.reconnects),
            ),
        ],
    );
}

/// The evidence store's disk use and package counters.
fn evidence_store(o: &mut Out, ev: &Evidence) {
    let (all, held) = ev.store().evidence_bytes().unwrap_or((0, 0));
    let c = &ev.counters;
    scalars(
        o,
        &[
            (
                "ioc_evidence_bytes",
                "gauge",
                "Bytes of evidence folders on disk (indexed).",
                all,
            ),
            (
                "ioc_evidence_held_bytes",
                "gauge",
                "Bytes of held (confirmed) evidence, kept by retention.",
                held,
            ),
            (
                "ioc_evidence_free_bytes",
                "gauge",
                "Free bytes on the evidence disk.",
                crate::evidence::free_bytes(&ev.dir).unwrap_or(0),
            ),
            (
                "ioc_evidence_sealed_total",
                "counter",
                "Evidence folders sealed.",
                load(&c.sealed),
            ),
            (
                "ioc_evidence_failed_total",
                "counter",
                "Evidence packages that could not be written (e.g. disk full).",
                load(&c.failed),
            ),
            (
                "ioc_evidence_removed_total",
                "counter",
                "Evidence folders removed by retention.",
                load(&c.removed),
            ),
            (
                "ioc_evidence_pending",
                "gauge",
                "Evidence packages waiting for their post-roll or being built.",
                load(&c.pending),
            ),
            (
                "ioc_evidence_dropped_total",
                "counter",
                "Evidence packages dropped because evidence.max_pending were waiting (the alert was still sent).",
                load(&c.dropped),
            ),
            (
                "ioc_evidence_clips_missing_total",
                "counter",
                "Packages sealed without a clip (no video in the ring).",
                load(&c.clips_missing),
            ),
            (
                "ioc_evidence_segments_shared_total",
                "counter",
                "Clip segments hard-linked from an overlapping event's stored copy instead of written again.",
                load(&c.segments_shared),
            ),
            (
                "ioc_evidence_bytes_shared_total",
                "counter",
                "Bytes of clip segments shared with an overlapping event (not written again).",
                load(&c.bytes_shared),
            ),
        ],
    );
}

/// The traffic-controller subscriber: topics, messages taken and refused.
fn signal_messages(o: &mut Out, s: &SignalBoard) {
    let c = &s.counters;
    scalars(
        o,
        &[
            (
                "ioc_signal_topics",
                "gauge",
                "Traffic-controller signal topics subscribed.",
                load(&c.topics),
            ),
            (
                "ioc_signal_messages_accepted_total",
                "counter",
                "Controller messages whose signal state was taken.",
                load(&c.accepted),
            ),
        ],
    );
    o.head(
        "ioc_signal_messages_refused_total",
        "counter",
        "Controller messages refused, by reason (malformed, unsigned, bad_signature, stale, future, replayed).",
    );
    for r in Refusal::ALL {
        o.line(
            "ioc_signal_messages_refused_total",
            &[("reason", r.as_str())],
            load(&c.refused[r.index()]),
        );
    }
}
