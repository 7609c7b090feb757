//! Hostile text never runs as script on the review and setup pages.
//!
//! Everything the pages show that someone other than the page's author can
//! choose gets markup that would set `window.__xss` (or call `alert`) if it
//! were ever parsed as HTML: review notes (through the API, and typed in the
//! page), plate text, rule names, zone, line and lane names (in the config,
//! and drawn and saved from the setup page), a camera's place name and
//! address, a save error that quotes a name.
//! Camera ids cannot carry markup (check-config allows letters, digits, '-'
//! and '_' only: `camera_ids_cannot_carry_markup`), so a hostile camera, event
//! type, severity, object class and review time are put straight into the
//! evidence index instead, as a second line of defence. The index and the
//! evidence folders are seeded with the library's own store before the agent
//! starts, so no detector is involved.
//!
//! The pages are opened in headless Chromium twice: once with the page's CSP
//! switched off (DevTools `Page.setBypassCSP`), which proves the page itself
//! never turns data into markup — with the CSP on, an injected `onerror`
//! would be blocked and `window.__xss` stay unset even if the page were
//! wrong — and once as served, where the CSP must report no violation.
//! Each time every hostile string must be visible as text, so a page that
//! dropped it would fail too; a canary injected by the test itself shows
//! that the checks would see an injection.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::webdriver::Driver;
use common::*;
use ioc_agent::store::evidence::{EvidenceRow, PlateRow, Review};
use ioc_agent::store::{Limits, Store};
use serde_json::{Value, json};

const TOKEN: &str = "xss-token-0123456789abcdef";

// What an officer writes.
const NOTE_API: &str = r#"<img src=x onerror="window.__xss=1">"#;
const NOTE_SEEDED: &str = r#""><script>window.__xss=2</script>"#;
const NOTE_TYPED: &str = r#"</textarea><img src=x onerror="window.__xss=3">&lt;b&gt;"#;
// What a plate reader reads.
const PLATE_A: &str = r#"<img src=x onerror="window.__xss='plate'">51F-123.45"#;
const PLATE_B: &str = r#""><svg onload="window.__xss='plate2'">&amp;"#;
const PLATE_C: &str = r#"'-alert('plate3')-'"#;
// What an installer writes in the config.
const ZONE: &str = r#"<img src=x onerror="window.__xss='zone'">gate"#;
const LINE: &str = r#""><script>window.__xss='line'</script>"#;
const LANE: &str = r#"<svg onload="window.__xss='lane'">bus"#;
const RULE_CFG: &str = r#"<script>window.__xss='rule'</script>entry"#;
// What an installer draws on the setup page: a good zone, and a bad line
// whose name comes back in the error.
const DRAWN: &str = r#"<img src=x onerror="window.__xss='drawn'">"#;
const BAD_LINE: &str = r#"<svg onload="window.__xss='error'">"#;
// Only reachable by writing the index directly (camera ids are restricted;
// types, severities and classes come from the agent itself).
const CAMERA: &str = r#"cam"><img src=x onerror="window.__xss='camera'">"#;
const TYPE_A: &str = r#"<img src=x onerror=alert('type')>"#;
const TYPE_C: &str = r#"zone_enter"><img src=x onerror="window.__xss='type3'">"#;
const RULE_A: &str = r#"</dd><script>window.__xss='rule2'</script>"#;
const RULE_B: &str = r#"<iframe srcdoc="<script>parent.__xss='rule3'</script>"></iframe>"#;
const SEVERITY: &str = r#"<details open ontoggle="window.__xss='severity'">"#;
const CLASS: &str = r#"<img src=x onerror="window.__xss='class'">"#;
const TRACK: &str = r#"7<script>window.__xss='track'</script>"#;
// Where the installer says the camera is.
const PLACE: &str = r#"<img src=x onerror="window.__xss='place'">Ngã tư"#;
const ADDRESS: &str = r#""><svg onload="window.__xss='address'">Số 2"#;
const REVIEWED_AT: &str = r#"<img src=x onerror="window.__xss='at'">"#;

/// One seeded event and what the page must show for it.
struct Seeded {
    id: &'static str,
    camera: &'static str,
    kind: &'static str,
    /// The type as the page names it (a known type has a label).
    shown_type: &'static str,
    rule: &'static str,
    severity: &'static str,
    plate: &'static str,
    class: &'static str,
    /// Track id as the alert carries it (a number, or hostile text).
    track: Value,
    /// The note the page must show once every review is in.
    note: &'static str,
    /// Texts that must be visible in the detail once every review is in.
    also: &'static [&'static str],
}

fn seeded() -> Vec<Seeded> {
    vec![
        Seeded {
            id: "01HXSSAAAAAAAAAAAAAAAAAAAA",
            camera: "cam-1",
            kind: TYPE_A,
            shown_type: TYPE_A,
            rule: RULE_A,
            severity: "high",
            plate: PLATE_A,
            class: CLASS,
            track: json!(TRACK),
            note: NOTE_API,
            also: &[TRACK],
        },
        Seeded {
            id: "01HXSSBBBBBBBBBBBBBBBBBBBB",
            camera: CAMERA,
            kind: "traffic.red_light",
            shown_type: "Vượt đèn đỏ",
            rule: RULE_B,
            severity: SEVERITY,
            plate: PLATE_B,
            class: "car",
            track: json!(3),
            note: NOTE_SEEDED,
            also: &[REVIEWED_AT],
        },
        Seeded {
            id: "01HXSSCCCCCCCCCCCCCCCCCCCC",
            camera: "cam-1",
            kind: TYPE_C,
            shown_type: TYPE_C,
            rule: RULE_CFG,
            severity: "low",
            plate: PLATE_C,
            class: "motorbike",
            track: json!(12),
            note: NOTE_TYPED,
            also: &[],
        },
    ]
}

/// The evidence index and folders as the agent would have left them.
fn seed(data: &Path) {
    let store = Store::open(
        data,
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 26,
        },
    )
    .unwrap();
    for (i, e) in seeded().iter().enumerate() {
        let row = EvidenceRow {
            event_id: e.id.into(),
            camera: e.camera.into(),
            kind: e.kind.into(),
            rule: e.rule.into(),
            time: format!("2026-03-0{}T08:00:00Z", 3 - i),
            severity: e.severity.into(),
            bytes: 64,
            held: false,
            plate: Some(PlateRow {
                text: e.plate.into(),
                confidence: 0.42,
                valid: i != 1,
            }),
            // The second one was reviewed before: its note and time come
            // from the index as they are.
            review: (e.note == NOTE_SEEDED).then(|| Review {
                status: "rejected".into(),
                note: NOTE_SEEDED.into(),
                at: REVIEWED_AT.into(),
                reviewer: "officer.seed".into(),
            }),
            files: vec!["event.json".into()],
            objects: json!([{"class": e.class, "track_id": e.track, "score": 0.9}]),
            place: json!({"name": PLACE, "address": ADDRESS}),
            measured: json!({}),
        };
        store.evidence_insert(&row).unwrap();
        let dir = data.join("evidence").join(e.id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("event.json"), serde_json::to_vec(&row).unwrap()).unwrap();
        // Sealed with the key the agent will load, so it can be reviewed.
        let key = ioc_agent::evidence::sign::load_or_create_key(&data.join("agent.key")).unwrap();
        let m = ioc_agent::evidence::sign::Manifest {
            schema: ioc_agent::evidence::sign::MANIFEST_SCHEMA.into(),
            event_id: e.id.into(),
            agent_id: "ward-xss".into(),
            camera: e.camera.into(),
            place: None,
            time: row.time.clone(),
            time_source: "agent_clock".into(),
            sealed_at: row.time.clone(),
            files: vec![],
            clip: None,
            public_key: String::new(),
            key_id: String::new(),
        };
        ioc_agent::evidence::sign::seal(&dir, &["event.json"], m, &key).unwrap();
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn config(broker: &Broker, data: &Path, port: u16) -> String {
    config_head("ward-xss", broker, data)
        + &format!(
            r#"
[[models]]
name = "yolox_nano"

[http]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[cameras]]
id = "cam-1"
url = "rtsp://127.0.0.1:{dead}/nobody-home"
[[cameras.zones]]
name = {zone}
polygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
[[cameras.lines]]
name = {line}
points = [[0.2, 0.6], [0.8, 0.6]]
[[cameras.lanes]]
name = {lane}
polygon = [[0.6, 0.1], [0.9, 0.1], [0.9, 0.9], [0.6, 0.9]]
direction = [[0.75, 0.9], [0.75, 0.1]]
[[cameras.rules]]
name = {rule}
kind = "zone_enter"
zone = {zone}
classes = ["car"]
"#,
            dead = free_port(),
            zone = toml(ZONE),
            line = toml(LINE),
            lane = toml(LANE),
            rule = toml(RULE_CFG),
        )
}

// ---- logging in: the one place that knows how ----

/// Logs the browser in through the page's own form (the page must be open
/// and asking); `auth_header` is the same for API calls.
fn log_in(d: &Driver) {
    let token = d.wait_find("#token", Duration::from_secs(20));
    d.type_in(&token, TOKEN);
    d.click(&d.wait_find("#login", Duration::from_secs(5)));
}

fn auth_header() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

// ---- browser checks ----

/// Installed before any page script: records dialogs instead of showing
/// them, and every CSP violation.
const HOOKS: &str = r#"
window.__dialogs = [];
for (const f of ['alert', 'confirm', 'prompt']) {
  window[f] = (m) => { window.__dialogs.push(f + ': ' + m); return null; };
}
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + (e.sample || e.blockedURI)));
"#;

/// No hostile string ran or became markup on the open page.
fn assert_clean(d: &Driver, page: &str, csp_on: bool) {
    // Give an `onerror` of a broken image time to fire.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.dialog_text(), None, "{page}: a dialog is open");
    let v = d.script(
        r#"const on = [];
        for (const e of document.querySelectorAll('*'))
          for (const a of e.attributes) if (/^on/i.test(a.name)) on.push(e.tagName + ' ' + a.name);
        return {
          xss: window.__xss === undefined ? null : String(window.__xss),
          dialogs: window.__dialogs, csp: window.__csp, handlers: on,
          scripts: document.scripts.length,
          injected: document.querySelectorAll('svg, iframe, details, b, img[src="x"]').length
        };"#,
    );
    println!("{page} (CSP {}): {v}", if csp_on { "on" } else { "off" });
    assert!(v["xss"].is_null(), "{page}: script ran: {v}");
    assert_eq!(v["dialogs"], json!([]), "{page}: a dialog was called");
    assert_eq!(v["handlers"], json!([]), "{page}: markup from data: {v}");
    assert_eq!(v["scripts"], 1, "{page}: a script element was added: {v}");
    assert_eq!(v["injected"], 0, "{page}: markup from data: {v}");
    assert_eq!(v["csp"], json!([]), "{page}: something tried to run: {v}");
}

/// Injects markup itself and shows that the checks above would see it:
/// with the CSP off its handler runs; with it on, the CSP blocks and
/// reports it.
fn canary(d: &Driver, csp_on: bool) {
    let v = d.script_async(
        r#"const done = arguments[arguments.length - 1];
        document.body.insertAdjacentHTML('beforeend', '<img id="canary" src="x" onerror="window.__canary=1">');
        const t = Date.now();
        (function wait() {
          if (window.__canary || window.__csp.length || Date.now() - t > 3000)
            done({canary: window.__canary ?? null, csp: window.__csp});
          else setTimeout(wait, 50);
        })();"#,
    );
    if csp_on {
        assert!(v["canary"].is_null(), "CSP did not block the canary: {v}");
        assert!(
            v["csp"].to_string().contains("script-src"),
            "CSP did not report the canary: {v}"
        );
    } else {
        assert_eq!(v["canary"], 1, "the canary did not run with CSP off: {v}");
    }
}

fn wait_until(d: &Driver, what: &str, js: &str, timeout: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = d.script(js);
        if v.as_bool() == Some(true) || (v.is_object() && v["ok"] == true) {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open_review(d: &Driver, port: u16) {
    d.goto(&format!("http://127.0.0.1:{port}/review"));
    wait_until(
        d,
        "three events listed",
        "return document.querySelectorAll('#events li[data-id]').length === 3",
        Duration::from_secs(20),
    );
}

/// Selects each event and checks that every field shows its text as text.
fn check_events(d: &Driver) {
    for e in seeded() {
        d.click(&d.wait_find(
            &format!("#events li[data-id=\"{}\"] button", e.id),
            Duration::from_secs(5),
        ));
        wait_until(
            d,
            "selected",
            &format!(
                "return document.getElementById('d-id').textContent === '{}'",
                e.id
            ),
            Duration::from_secs(5),
        );
        let v = d.script(&format!(
            r#"const g = (id) => document.getElementById(id);
            return {{
              xss: window.__xss === undefined ? null : String(window.__xss),
              plate: g('d-plate').textContent, camera: g('d-camera').textContent,
              type: g('d-type').textContent, rule: g('d-rule').textContent,
              severity: g('d-severity').textContent, objects: g('d-objects').textContent,
              note: g('note').value, at: g('review-at').textContent,
              detail: g('detail').innerText,
              item: document.querySelector('#events li[data-id="{}"]').innerText
            }};"#,
            e.id
        ));
        assert!(v["xss"].is_null(), "script ran on the review page: {v}");
        assert_eq!(v["plate"], e.plate, "plate not shown as text: {v}");
        assert_eq!(v["camera"], e.camera, "{v}");
        assert_eq!(v["type"], e.shown_type, "{v}");
        assert_eq!(v["rule"], e.rule, "{v}");
        if e.severity != "high" && e.severity != "low" {
            assert_eq!(v["severity"], e.severity, "{v}");
        }
        assert_eq!(v["note"], e.note, "{v}");
        let objects = v["objects"].as_str().unwrap();
        assert!(objects.contains(e.class), "{v}");
        if let Some(t) = e.track.as_str() {
            assert!(objects.contains(t), "{v}");
        }
        // Shown on screen (innerText skips hidden elements), not only in the DOM.
        let detail = v["detail"].as_str().unwrap();
        for s in [
            e.plate,
            e.camera,
            e.shown_type,
            e.rule,
            e.class,
            PLACE,
            ADDRESS,
        ]
        .iter()
        .chain(e.also)
        {
            assert!(
                detail.contains(s),
                "not visible in the detail: {s}\n{detail}"
            );
        }
        let item = v["item"].as_str().unwrap();
        for s in [e.plate, e.camera, e.shown_type] {
            assert!(item.contains(s), "not visible in the list: {s}\n{item}");
        }
    }
}

/// The officer rejects the third event with a hostile note typed in the page.
fn review_in_page(d: &Driver) {
    let id = seeded()[2].id;
    d.click(&d.wait_find(
        &format!("#events li[data-id=\"{id}\"] button"),
        Duration::from_secs(5),
    ));
    let note = d.wait_find("#note", Duration::from_secs(5));
    d.script("document.getElementById('note').value = ''; return 0");
    d.type_in(&note, NOTE_TYPED);
    d.click(&d.wait_find("#reject", Duration::from_secs(5)));
    wait_until(
        d,
        "rejected in the page",
        &format!(
            "return document.getElementById('review-status').dataset.status === 'rejected' \
             && document.querySelector('#events li[data-id=\"{id}\"] .badge[data-status=\"rejected\"]') !== null"
        ),
        Duration::from_secs(10),
    );
}

fn geo_texts(d: &Driver) -> String {
    d.script("return [...document.querySelectorAll('#geo-list li span')].map((s) => s.innerText).join('\\n')")
        .as_str()
        .unwrap()
        .to_string()
}

fn open_setup(d: &Driver, port: u16, names: &[&str]) {
    d.goto(&format!("http://127.0.0.1:{port}/setup"));
    let start = Instant::now();
    loop {
        let text = geo_texts(d);
        if names.iter().all(|n| text.contains(n)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "setup list lacks a name (window.__xss = {}):\n{text}",
            d.script("return String(window.__xss)")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        d.script("return document.getElementById('camera').value"),
        "cam-1"
    );
}

/// Draws `points` on the canvas (normalised) with the mouse.
fn draw(d: &Driver, points: &[[f64; 2]]) {
    let canvas = d.wait_find("#draw", Duration::from_secs(5));
    d.script("document.getElementById('draw').scrollIntoView({block: 'center'}); return 0");
    let size = d.script(
        "const c = document.getElementById('draw').getBoundingClientRect(); return [c.width, c.height]",
    );
    let (w, h) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    assert!(w > 10.0 && h > 10.0, "canvas {w}x{h}");
    for [u, v] in points {
        d.click_at(
            &canvas,
            ((u - 0.5) * w).round() as i64,
            ((v - 0.5) * h).round() as i64,
        );
    }
}

fn name_next(d: &Driver, name: &str) {
    d.script("document.getElementById('geo-name').value = ''; return 0");
    d.type_in(&d.wait_find("#geo-name", Duration::from_secs(5)), name);
}

fn save_and_wait(d: &Driver, want: &str) -> String {
    d.click(&d.wait_find("#save", Duration::from_secs(5)));
    let v = wait_until(
        d,
        "save",
        &format!(
            "const s = document.getElementById('save-status'); \
             return {{ok: s.dataset.state === '{want}', state: s.dataset.state, text: s.innerText}}"
        ),
        Duration::from_secs(30),
    );
    v["text"].as_str().unwrap().to_string()
}

/// The installer names a line with markup and draws it with both points in
/// one place: the error quotes the name, as text. Then a good zone with a
/// hostile name is saved, applied and listed from the running config.
fn draw_in_setup(d: &Driver, port: u16) {
    name_next(d, BAD_LINE);
    d.click(&d.wait_find("#new-line", Duration::from_secs(5)));
    draw(d, &[[0.3, 0.3], [0.3, 0.3]]);
    let err = save_and_wait(d, "error");
    println!("setup error: {err}");
    assert!(
        err.contains(BAD_LINE),
        "the error does not show the name: {err}"
    );
    assert_clean(d, "setup error", false);
    // Start over from the running config, then a zone that is fine.
    open_setup(d, port, &[ZONE, LINE, LANE]);
    name_next(d, DRAWN);
    d.click(&d.wait_find("#new-zone", Duration::from_secs(5)));
    draw(d, &[[0.2, 0.6], [0.45, 0.6], [0.3, 0.9]]);
    d.click(&d.wait_find("#finish", Duration::from_secs(5)));
    save_and_wait(d, "applied");
    let start = Instant::now();
    while !geo_texts(d).contains(DRAWN) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "saved zone not listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, _, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/setup"),
        &[(auth_header().0, &auth_header().1)],
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    let zones = &v["cameras"][0]["geometry"]["zones"];
    assert!(
        zones.as_array().unwrap().iter().any(|z| z["name"] == DRAWN),
        "{zones}"
    );
}

/// One pass over both pages in a fresh browser. The first pass (CSP off)
/// also reviews in the page and draws in the setup page.
fn browse(port: u16, csp_on: bool) {
    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path());
    d.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": HOOKS}),
    );
    if !csp_on {
        d.cdp("Page.setBypassCSP", json!({"enabled": true}));
    }
    d.goto(&format!("http://127.0.0.1:{port}/review"));
    log_in(&d);
    open_review(&d, port);
    if !csp_on {
        review_in_page(&d);
        assert_clean(&d, "review after saving", csp_on);
        // Everything again as the server now has it.
        open_review(&d, port);
    }
    check_events(&d);
    assert_clean(&d, "review", csp_on);

    open_setup(&d, port, &[ZONE, LINE, LANE]);
    assert_clean(&d, "setup", csp_on);
    if !csp_on {
        draw_in_setup(&d, port);
        assert_clean(&d, "setup after saving", csp_on);
    } else {
        open_setup(&d, port, &[ZONE, LINE, LANE, DRAWN]);
        assert_clean(&d, "setup", csp_on);
    }
    canary(&d, csp_on);
}

fn check_config(cfg: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, cfg).unwrap();
    std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap()
}

#[test]
fn hostile_names_plates_and_notes_never_run_as_script() {
    let t0 = Instant::now();
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(&broker, data.path(), port);
    // Zone, line, lane and rule names are free text to check-config.
    let out = check_config(&cfg);
    assert!(
        out.status.success(),
        "check-config refused the hostile names: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    seed(data.path());
    let agent = Agent::start(&cfg);
    let start = Instant::now();
    loop {
        if wait_port(port, Duration::from_millis(200)) {
            let (st, _, _) = http_get(
                &format!("http://127.0.0.1:{port}/api/events"),
                &[(auth_header().0, &auth_header().1)],
            );
            if st == 200 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "agent not serving:\n{}",
            agent.log_text()
        );
    }

    // Both pages carry a CSP that allows no inline code but their own.
    for page in ["/review", "/setup"] {
        let (st, headers, _) = http_get(&format!("http://127.0.0.1:{port}{page}"), &[]);
        assert_eq!(st, 200);
        let csp = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-security-policy"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{page} has no Content-Security-Policy"));
        for want in [
            "script-src 'sha256-",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(want), "{page} CSP lacks {want}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{page}: {csp}"
        );
    }

    // The first note through the API, as another client would send it.
    let (k, v) = auth_header();
    let r = ureq::post(&format!(
        "http://127.0.0.1:{port}/api/events/{}/review",
        seeded()[0].id
    ))
    .set(k, &v)
    .set("Content-Type", "application/json")
    .send_string(&json!({"status": "confirmed", "note": NOTE_API}).to_string())
    .unwrap();
    assert_eq!(r.status(), 200);

    browse(port, false);
    browse(port, true);
    records_escape_everything(port);

    // What the page saved is stored as typed.
    let (_, _, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/events"),
        &[(auth_header().0, &auth_header().1)],
    );
    let list: Value = serde_json::from_slice(&body).unwrap();
    let third = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == seeded()[2].id)
        .unwrap();
    assert_eq!(third["review"]["note"], NOTE_TYPED);
    assert_eq!(third["review"]["status"], "rejected");
    println!(
        "no hostile string ran on either page; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// The printable record (`/api/events/{id}/record`) is made on the server:
/// every hostile string must come out as text (escaped), never as a tag,
/// and the record has no script at all.
fn records_escape_everything(port: u16) {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    for e in seeded() {
        let (st, headers, body) = http_get(
            &format!("http://127.0.0.1:{port}/api/events/{}/record", e.id),
            &[(auth_header().0, &auth_header().1)],
        );
        assert_eq!(st, 200, "record of {}", e.id);
        let html = String::from_utf8_lossy(&body).to_string();
        let csp = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-security-policy"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(csp.contains("script-src 'sha256-"), "record CSP: {csp}");
        for tag in ["<script", "<svg", "<iframe", "<details", "<img src=x"] {
            assert!(!html.contains(tag), "record of {} has {tag}:\n{html}", e.id);
        }
        // The only images are the folder's own pictures.
        for (i, _) in html.match_indices("<img") {
            assert!(
                html[i..].starts_with(&format!("<img src=\"/evidence/{}/", e.id)),
                "record of {}: an image from data: {}",
                e.id,
                &html[i..(i + 80).min(html.len())]
            );
        }
        for s in [e.plate, e.camera, e.rule, PLACE, ADDRESS] {
            assert!(
                html.contains(&esc(s)),
                "record of {} lacks {s} as text",
                e.id
            );
        }
    }
}

/// Camera ids (and the agent id) are restricted to safe characters, so they
/// cannot carry markup into a page at all.
#[test]
fn camera_ids_cannot_carry_markup() {
    let broker_url = "mqtt://127.0.0.1:1883";
    for (what, cfg) in [
        (
            "camera id",
            format!(
                "agent_id = \"w\"\n[mqtt]\nurl = \"{broker_url}\"\n[[cameras]]\nid = {}\nurl = \"rtsp://127.0.0.1:8554/a\"\n",
                toml(CAMERA)
            ),
        ),
        (
            "agent_id",
            format!(
                "agent_id = {}\n[mqtt]\nurl = \"{broker_url}\"\n",
                toml(CAMERA)
            ),
        ),
    ] {
        let out = check_config(&cfg);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} with markup accepted");
        assert!(
            text.contains("use only letters, digits, '-' and '_'"),
            "{what}: {text}"
        );
    }
}

/// The pages' scripts never hand data to an HTML parser or to `eval`: no
/// `innerHTML`, `outerHTML`, `insertAdjacentHTML`, `document.write`, … at
/// all, and no inline event handler attributes (the CSP would block them).
/// A constant use would have to be listed in `ALLOWED` with its line.
#[test]
fn pages_never_parse_data_as_html() {
    const SINKS: &[&str] = &[
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "DOMParser",
        "srcdoc",
        "eval(",
        "new Function",
        "setTimeout(\"",
        "setTimeout('",
        "setInterval(\"",
        "setInterval('",
        "javascript:",
        "setAttribute('on",
        "setAttribute(\"on",
    ];
    /// (page, trimmed line) of each reviewed constant use; none today.
    const ALLOWED: &[(&str, &str)] = &[];
    let mut found = Vec::new();
    for page in ["review.html", "setup.html"] {
        let text = std::fs::read_to_string(root().join("agent/http").join(page)).unwrap();
        let (open, close) = (
            text.find("<script>").unwrap(),
            text.rfind("</script>").unwrap(),
        );
        let mut at = 0;
        for (n, line) in text.lines().enumerate() {
            let in_script = at > open && at < close;
            at += line.len() + 1;
            let lower = line.to_ascii_lowercase();
            for s in SINKS {
                if in_script
                    && lower.contains(&s.to_ascii_lowercase())
                    && !ALLOWED.contains(&(page, line.trim()))
                {
                    found.push(format!("{page}:{}: {s}: {}", n + 1, line.trim()));
                }
            }
            // Markup: no on…= attribute on any tag.
            if !in_script {
                for tag in line.split('<').skip(1) {
                    let tag = tag.split('>').next().unwrap_or("");
                    if tag
                        .split_whitespace()
                        .skip(1)
                        .any(|a| a.to_ascii_lowercase().starts_with("on"))
                    {
                        found.push(format!(
                            "{page}:{}: handler attribute: {}",
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "HTML sinks in the pages (build elements with textContent instead):\n{}",
        found.join("\n")
    );
}
