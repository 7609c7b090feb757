//! The review page in a real browser (Debian's headless Chromium driven over
//! WebDriver): log in with the token, open the newest violation, play its
//! clip (the video element reports a duration and its time advances) and
//! confirm it; the decision is stored and published on MQTT.

use crate::common;

use std::time::{Duration, Instant};

use common::webdriver::Driver;
use common::*;
use serde_json::Value;

const TOKEN: &str = "review-token-0123456789";
const PLACE: &str = "Ngã tư Hàng Bạc – Đinh Liệt";

/// The camera's place as every message and record must carry it.
fn assert_place(what: &str, v: &Value) {
    let p = &v["place"];
    assert_eq!(p["name"], PLACE, "{what} lacks the place: {v}");
    assert_eq!(p["ward"]["code"], "00070", "{what}: {v}");
    assert_eq!(p["province"]["code"], "01", "{what}: {v}");
    assert_eq!(p["lat"], 21.0341, "{what}: {v}");
    assert_eq!(p["lon"], 105.852, "{what}: {v}");
}
#[test]
fn officer_plays_a_clip_and_confirms_a_violation() {
    let broker = Broker::start();
    let sim = Sim::start(&[("traffic", &traffic_clip())]);
    let sub = Subscriber::start(&broker, "ioc/v1/#");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head("ward-review", &broker, data.path())
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[evidence]
pre_secs = 1.5
post_secs = 1.5

[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[cameras]]
id = "traffic"
url = "{}"
[cameras.place]
name = "{PLACE}"
address = "Số 2 Hàng Bạc, phường Hoàn Kiếm, Hà Nội"
lat = 21.0341
lon = 105.852
heading_deg = 270.0
ward = {{ code = "00070", name = "Phường Hoàn Kiếm" }}
province = {{ code = "01", name = "Thành phố Hà Nội" }}
[[cameras.lines]]
name = "mid"
points = [[0.5, 0.3], [0.5, 1.0]]
[[cameras.rules]]
name = "crossing"
kind = "line_cross"
line = "mid"
classes = ["car", "truck", "bus"]
"#,
            sim.url("traffic")
        );
    let agent = Agent::start(&cfg);
    let sealed = sub.wait_for(Duration::from_secs(90), |m| {
        serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["kind"] == "evidence")
    });
    assert!(
        sealed.is_some(),
        "no evidence sealed; log:\n{}",
        agent.log_text()
    );
    // The place is in the alert, the evidence update and the signed manifest.
    let sealed: Value = serde_json::from_slice(&sealed.unwrap().payload).unwrap();
    assert_place("the evidence update", &sealed);
    let sealed_id = sealed["event_id"].as_str().unwrap().to_string();
    let alert = sub
        .alerts()
        .into_iter()
        .find(|a| a["id"] == sealed_id.as_str())
        .expect("the sealed event's alert");
    assert_place("the alert", &alert);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            data.path()
                .join("evidence")
                .join(&sealed_id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_place("the manifest", &manifest);

    // The page is served with a strict CSP (its own inline script and style
    // by hash, never framed) and no MIME sniffing; everything below runs
    // in the browser under that policy.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /review HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut head = String::new();
        s.read_to_string(&mut head).unwrap();
        let head = head.to_ascii_lowercase();
        for want in [
            "content-security-policy: default-src 'self'; script-src 'sha256-",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
        ] {
            assert!(head.contains(want), "/review lacks {want}");
        }
        assert!(!head.contains("unsafe-inline"), "CSP allows inline code");
    }
    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path());
    d.goto(&format!("http://127.0.0.1:{port}/review"));
    // No cookie yet: the page asks for the token.
    let token = d.wait_find("#token", Duration::from_secs(20));
    d.type_in(&token, TOKEN);
    let login = d.wait_find("#login", Duration::from_secs(5));
    d.click(&login);
    d.wait_find("#events li[data-id]", Duration::from_secs(20));
    let id = d
        .script("return document.querySelector('#events li[data-id]').dataset.id")
        .as_str()
        .unwrap()
        .to_string();
    // The severity reads as a word, in the page's language (the alerts'
    // values are low, normal and high; "normal" used to show untranslated).
    let sev = d.script("return document.getElementById('d-severity').textContent");
    assert!(
        ["Thấp", "Bình thường", "Cao"].contains(&sev.as_str().unwrap_or("")),
        "severity shown as {sev}"
    );
    // Where and when, as the officer reads them: the place with its ward
    // and code, the time in Vietnam's zone with the offset written, and
    // what the rule measured (the line crossed, the direction).
    let shown = d.script(
        "const g = (id) => document.getElementById(id).innerText;
         return {place: g('d-place'), time: g('d-time'), measured: g('d-measured'),
                 item: document.querySelector('#events li[data-id]').innerText};",
    );
    println!("shown: {shown}");
    let text = |k: &str| shown[k].as_str().unwrap_or("").to_string();
    for want in [
        PLACE,
        "Phường Hoàn Kiếm (00070)",
        "21.034100, 105.852000",
        "270°",
    ] {
        assert!(text("place").contains(want), "place lacks {want}: {shown}");
    }
    assert!(
        text("item").contains(PLACE),
        "list lacks the place: {shown}"
    );
    assert!(
        text("time").contains("GMT+7"),
        "time not in the site zone: {shown}"
    );
    assert!(
        text("measured").contains("Vạch: mid"),
        "measured values: {shown}"
    );
    // Play the selected event's clip.
    let played = d.script_async(
        r#"const done = arguments[arguments.length - 1];
        const v = document.getElementById('clip');
        const t = Date.now();
        (function wait() {
          if (v.readyState >= 1 && v.duration > 0) {
            v.muted = true;
            v.play().then(() => {
              const t0 = v.currentTime;
              setTimeout(() => done({duration: v.duration, t0, t1: v.currentTime, src: v.currentSrc, err: null}), 1500);
            }).catch(e => done({err: String(e), duration: v.duration, src: v.currentSrc}));
          } else if (Date.now() - t > 20000) {
            done({err: 'not loaded', readyState: v.readyState, src: v.currentSrc,
                  mediaError: v.error ? v.error.code : null});
          } else { setTimeout(wait, 100); }
        })();"#,
    );
    println!("video: {played}");
    assert!(played["err"].is_null(), "clip did not play: {played}");
    let duration = played["duration"].as_f64().unwrap();
    assert!(duration > 0.0, "duration {duration}");
    // The clip is segments shared with other events on the session's clock;
    // its header's edit list makes it start at 0 and last what it signs.
    let m: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("evidence").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let signed = m["clip"]["duration_secs"].as_f64().unwrap();
    assert!(
        (duration - signed).abs() < 0.3,
        "the browser's clip lasts {duration:.2} s; its manifest signs {signed:.2} s"
    );
    assert!(
        played["t0"].as_f64().unwrap() < 0.5,
        "playback began at {} s, not at the clip's start",
        played["t0"]
    );
    assert!(
        played["t1"].as_f64().unwrap() > played["t0"].as_f64().unwrap(),
        "playback did not advance: {played}"
    );
    assert!(
        played["src"]
            .as_str()
            .unwrap()
            .contains(&format!("/evidence/{id}/clip.mp4"))
    );
    // Confirm it with the keyboard, as an officer going through a list
    // does: N goes to the note, Escape leaves it, C confirms.
    d.script("document.activeElement && document.activeElement.blur()");
    d.press("n");
    let focused = d.script("return document.activeElement.id");
    assert_eq!(focused, "note", "N did not go to the note");
    d.press("ket xe\u{E00C}");
    let note = d.script("return document.getElementById('note').value");
    assert_eq!(note, "ket xe", "typing in the note is not a shortcut");
    d.press("c");
    let start = Instant::now();
    loop {
        let st = d.script("return document.getElementById('review-status').dataset.status");
        if st == "confirmed" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "status stayed {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stored (and held), and published on the events topic as an update.
    let (st, _, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/events"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(st, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let ev = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ev["review"]["status"], "confirmed");
    assert_eq!(ev["held"], true);
    assert_place("/api/events", &ev);
    assert_eq!(ev["measured"]["line"], "mid", "{ev}");
    assert_eq!(list["time_zone"], "Asia/Ho_Chi_Minh");
    let update = sub.wait_for(Duration::from_secs(10), |m| {
        serde_json::from_slice::<Value>(&m.payload)
            .is_ok_and(|v| v["kind"] == "review" && v["event_id"] == id.as_str())
    });
    let update: Value =
        serde_json::from_slice(&update.expect("review update on MQTT").payload).unwrap();
    assert_eq!(update["review"]["status"], "confirmed");
    assert_place("the review update", &update);

    // The printable record, as the page's P key opens it: what, when (in
    // Vietnam's zone), where, the decision, the pictures, and the signature
    // checked as the record is made, with the manifest's fingerprint.
    let folder = data.path().join("evidence").join(&id);
    let manifest_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(folder.join("manifest.json")).unwrap(),
        ))
    };
    let record_url = format!("http://127.0.0.1:{port}/api/events/{id}/record");
    let href = d.script("return document.getElementById('record').href");
    assert_eq!(href, record_url.as_str(), "the page's record link");
    let read_record = || {
        d.goto(&record_url);
        d.wait_find("table", Duration::from_secs(10));
        d.script_async(
            r#"const done = arguments[arguments.length - 1];
            const imgs = [...document.images];
            const t = Date.now();
            (function wait() {
              if (imgs.every((i) => i.complete) || Date.now() - t > 10000)
                done({text: document.body.innerText,
                      images: imgs.map((i) => [i.getAttribute('src'), i.naturalWidth]),
                      styled: getComputedStyle(document.querySelector('th')).backgroundColor});
              else setTimeout(wait, 100);
            })();"#,
        )
    };
    let rec = read_record();
    println!("record: {rec}");
    let text = rec["text"].as_str().unwrap_or("").to_string();
    for want in [
        PLACE,
        "Phường Hoàn Kiếm (00070)",
        "(UTC+07:00)",
        "Đã xác nhận / confirmed",
        "ket xe",
        "Hợp lệ / valid",
        manifest_sha.as_str(),
        "Vạch / line: mid",
        "Người, phương tiện đi qua vạch",
    ] {
        assert!(text.contains(want), "record lacks {want:?}:\n{text}");
    }
    let images = rec["images"].as_array().unwrap();
    assert!(
        images
            .iter()
            .any(|i| i[0].as_str().unwrap_or("").ends_with("overview.jpg")
                && i[1].as_u64() > Some(0)),
        "the overview picture did not load in the record: {rec}"
    );
    assert_eq!(
        rec["styled"], "rgb(243, 243, 243)",
        "the record's style was blocked"
    );
    // A changed file: the record says the evidence is not valid.
    let overview = folder.join("overview.jpg");
    let mut bytes = std::fs::read(&overview).unwrap();
    bytes.push(0);
    std::fs::write(&overview, bytes).unwrap();
    let rec = read_record();
    let text = rec["text"].as_str().unwrap_or("");
    assert!(
        text.contains("Không hợp lệ / NOT valid") && text.contains("overview.jpg"),
        "a changed picture still reads as valid:\n{text}"
    );
    println!("confirmed {id} in the browser; clip {duration:.2} s played");

    // Guessing the token: after a few wrong ones this address gets 429 with
    // Retry-After, even for the right token, until a try is back.
    let login = |token: &str| {
        use std::io::{Read, Write};
        let body = format!("{{\"token\": \"{token}\"}}");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, out.to_ascii_lowercase())
    };
    let codes: Vec<u16> = (0..8).map(|i| login(&format!("wrong-{i}")).0).collect();
    assert_eq!(&codes[..5], &[401; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| *c == 429), "{codes:?}");
    let (code, text) = login(TOKEN);
    assert_eq!(code, 429, "the right token while limited");
    assert!(text.contains("retry-after:"), "{text}");
    sub.shutdown();
}

/// The type filter offers exactly the event types the rules raise, named as
/// the alerts name them (`name_vi`, `name`), in both languages. Before, the
/// page carried its own list: it offered `traffic.lane_violation` (no rule
/// raises it) and `zone_enter` without `object.`, and lacked `illegal_stop`,
/// `overload`, `lane_line` and `lane_class`.
#[test]
fn the_type_filter_is_the_rule_table() {
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config_head("ward-types", &broker, data.path())
        + &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n");
    let mut want: Vec<(String, String, String)> = Vec::new();
    for k in ioc_agent::rules::KINDS {
        if !want.iter().any(|w| w.0 == k.event_type) {
            want.push((k.event_type.into(), k.vi.into(), k.en.into()));
        }
    }
    // One indexed event of every type, each at its own place; the first
    // confirmed, the second rejected, the rest pending.
    let ids = seed_one_per_type(data.path(), &want);
    let _agent = Agent::start(&cfg);
    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path());
    d.goto(&format!("http://127.0.0.1:{port}/review"));
    d.wait_find(
        "#f-type option[value='object.zone_enter']",
        Duration::from_secs(20),
    );
    let options = |d: &Driver| -> Vec<(String, String)> {
        let v = d.script(
            "return [...document.querySelectorAll('#f-type option')].filter(o => o.value).map(o => [o.value, o.textContent])",
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect()
    };
    let vi = options(&d);
    let want_vi: Vec<(String, String)> = want.iter().map(|w| (w.0.clone(), w.1.clone())).collect();
    assert_eq!(
        vi, want_vi,
        "the type filter (Vietnamese) is not the rule table"
    );
    let lang = d.wait_find("#lang", Duration::from_secs(5));
    d.click(&lang);
    let en = options(&d);
    let want_en: Vec<(String, String)> = want.iter().map(|w| (w.0.clone(), w.2.clone())).collect();
    assert_eq!(
        en, want_en,
        "the type filter (English) is not the rule table"
    );
    // Logged in, filtering by each type lists that type's event only.
    let token = d.wait_find("#token", Duration::from_secs(20));
    d.type_in(&token, TOKEN);
    d.click(&d.wait_find("#login", Duration::from_secs(5)));
    let shown = |d: &Driver, what: &str, want: &[&str]| {
        let start = Instant::now();
        loop {
            let v = d.script(
                "return [...document.querySelectorAll('#events li[data-id]')].map(li => li.dataset.id)",
            );
            let got: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            w.sort();
            if sorted == w {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "filter {what}: listed {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let set = |d: &Driver, id: &str, value: &str| {
        d.script(&format!(
            "const e = document.getElementById('{id}'); e.value = {}; e.dispatchEvent(new Event('change'));",
            serde_json::to_string(value).unwrap()
        ));
    };
    shown(
        &d,
        "none",
        &ids.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    for (i, w) in want.iter().enumerate() {
        set(&d, "f-type", &w.0);
        shown(&d, &w.0, &[&ids[i]]);
    }
    set(&d, "f-type", "");
    // By review status.
    set(&d, "f-status", "confirmed");
    shown(&d, "confirmed", &[&ids[0]]);
    set(&d, "f-status", "rejected");
    shown(&d, "rejected", &[&ids[1]]);
    set(&d, "f-status", "pending");
    shown(
        &d,
        "pending",
        &ids[2..].iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    set(&d, "f-status", "");
    // By place: part of its name, any case.
    let place = d.wait_find("#f-place", Duration::from_secs(5));
    d.type_in(&place, "NÚT GIAO 07".to_lowercase().as_str());
    d.click(&d.wait_find("#refresh", Duration::from_secs(5)));
    shown(&d, "place", &[&ids[7]]);
    println!(
        "type filter: {} event types, named as the alerts name them; filtering by each type, by status and by place lists exactly its events",
        want.len()
    );
}

/// One evidence-index row per event type; their ids, in `types` order.
fn seed_one_per_type(data: &std::path::Path, types: &[(String, String, String)]) -> Vec<String> {
    use ioc_agent::store::evidence::{EvidenceRow, Review};
    use ioc_agent::store::{Limits, Store};
    let store = Store::open(
        data,
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 26,
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    for (i, (kind, _, _)) in types.iter().enumerate() {
        let id = format!("01HTYPES{i:018}");
        let review = match i {
            0 => Some("confirmed"),
            1 => Some("rejected"),
            _ => None,
        };
        store
            .evidence_insert(&EvidenceRow {
                event_id: id.clone(),
                camera: "cam".into(),
                kind: kind.clone(),
                rule: format!("rule {i}"),
                time: format!("2026-12-01T08:{i:02}:00Z"),
                severity: "normal".into(),
                bytes: 10,
                held: false,
                plate: None,
                review: review.map(|s| Review {
                    status: s.into(),
                    note: String::new(),
                    at: "2026-12-01T09:00:00Z".into(),
                    reviewer: "officer".into(),
                }),
                files: vec![],
                objects: serde_json::json!([]),
                place: serde_json::json!({"name": format!("Nút giao {i:02}")}),
                measured: serde_json::json!({}),
            })
            .unwrap();
        ids.push(id);
    }
    ids
}
