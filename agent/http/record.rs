//! The violation record an officer prints or saves as PDF from the browser
//! (`GET /api/events/{id}/record`): what, when (in the site's zone), where,
//! which vehicle, what was measured, the pictures, the officer's decision,
//! and the evidence's signature — checked when the record is made, with its
//! fingerprint so anyone can check it again with `ioc-agent verify`.
//!
//! Server-rendered, with every value escaped and no script at all; its one
//! inline style is allowed by hash in the pages' CSP.

use crate::store::evidence::EvidenceRow;

/// The record's style block (hashed into the CSP like the pages' own).
pub(super) const STYLE: &str = "<style>\
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:52rem;color:#111}\
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1rem;margin:1.2rem 0 .4rem;border-bottom:1px solid #999}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.25rem .5rem;border:1px solid #ccc}\
th{width:14rem;background:#f3f3f3;font-weight:600}.pics{display:flex;gap:.5rem;flex-wrap:wrap}\
.pics figure{margin:0}.pics img{max-width:100%;max-height:22rem;border:1px solid #999}\
.ok{color:#05620f;font-weight:600}.bad{color:#a00000;font-weight:600}code{word-break:break-all}\
.muted{color:#555;font-size:.85rem}@media print{a{color:inherit;text-decoration:none}}\
</style>";

/// What the signature check found when the record was made.
pub(super) enum Seal {
    /// Files match the manifest, signed by the agent's key `key_id`.
    Valid { key_id: String },
    /// The check failed: the problems, one per line.
    Invalid(Vec<String>),
}

/// Everything a record shows besides the index row.
pub(super) struct RecordInput<'a> {
    pub row: &'a EvidenceRow,
    pub agent_id: &'a str,
    pub tz: chrono_tz::Tz,
    /// sha256 of `manifest.json`'s bytes, hex.
    pub manifest_sha256: Option<String>,
    pub seal: Seal,
}

/// `&`, `<`, `>`, `"` and `'` as entities: text stays text.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 3339 time in the site's zone, `dd/mm/yyyy HH:MM:SS (UTC+07:00)`;
/// the text as it is when it does not parse.
pub(super) fn local_time(rfc3339: &str, tz: chrono_tz::Tz) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&tz)
            .format("%d/%m/%Y %H:%M:%S (UTC%:z)")
            .to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

fn row(out: &mut String, vi: &str, en: &str, value_html: &str) {
    out.push_str(&format!(
        "<tr><th>{vi}<br><span class=\"muted\">{en}</span></th><td>{value_html}</td></tr>"
    ));
}

/// The place as lines: name, address, units with codes, coordinates.
fn place_html(p: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().map(esc);
    let mut lines = Vec::new();
    if let Some(n) = s(&p["name"]) {
        lines.push(format!("<strong>{n}</strong>"));
    }
    if let Some(a) = s(&p["address"]) {
        lines.push(a);
    }
    let units: Vec<String> = ["ward", "district", "province"]
        .iter()
        .filter_map(|k| {
            let u = &p[*k];
            Some(format!(
                "{} ({})",
                s(&u["name"])?,
                s(&u["code"]).unwrap_or_default()
            ))
        })
        .collect();
    if !units.is_empty() {
        lines.push(units.join(", "));
    }
    if let (Some(lat), Some(lon)) = (p["lat"].as_f64(), p["lon"].as_f64()) {
        let mut geo = format!("{lat:.6}, {lon:.6}");
        if let Some(h) = p["heading_deg"].as_f64() {
            geo.push_str(&format!(" · hướng nhìn / heading {h:.0}°"));
        }
        lines.push(geo);
    }
    if lines.is_empty() {
        return "Chưa khai báo / not set ([cameras.place])".into();
    }
    lines.join("<br>")
}

/// One line per measured value, `key: value`.
fn measured_html(m: &serde_json::Value) -> String {
    let Some(obj) = m.as_object().filter(|o| !o.is_empty()) else {
        return "—".into();
    };
    let label = |k: &str| match k {
        "speed_kmh" => "Tốc độ / speed (km/h)",
        "signal" => "Đèn tín hiệu / signal",
        "dwell_secs" => "Thời gian dừng / dwell (s)",
        "count" => "Số lượng / count",
        "lane" => "Làn / lane",
        "zone" => "Vùng / zone",
        "line" => "Vạch / line",
        "direction" => "Hướng / direction",
        "confidence" => "Độ tin cậy / confidence",
        "phase" => "Giai đoạn / phase",
        "end_reason" => "Lý do kết thúc / end reason",
        _ => "",
    };
    obj.iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o
                    .iter()
                    .map(|(a, b)| {
                        format!(
                            "{a}: {}",
                            b.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| b.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            let l = label(k);
            format!("{}: {}", esc(if l.is_empty() { k } else { l }), esc(&text))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The whole record page.
pub(super) fn render(r: &RecordInput<'_>) -> String {
    let e = r.row;
    let (en, vi) = crate::rules::KINDS
        .iter()
        .find(|k| k.event_type == e.kind)
        .map(|k| (k.en, k.vi))
        .unwrap_or((e.kind.as_str(), e.kind.as_str()));
    let id = esc(&e.event_id);
    let mut t = String::new();
    row(
        &mut t,
        "Hành vi vi phạm",
        "Violation",
        &format!("<strong>{}</strong><br>{}", esc(vi), esc(en)),
    );
    row(
        &mut t,
        "Thời gian",
        "Time",
        &format!(
            "{}<br><span class=\"muted\">{} UTC</span>",
            esc(&local_time(&e.time, r.tz)),
            esc(&e.time)
        ),
    );
    row(&mut t, "Địa điểm", "Place", &place_html(&e.place));
    row(
        &mut t,
        "Camera",
        "Camera",
        &format!("{} · {}", esc(&e.camera), esc(r.agent_id)),
    );
    let plate = match &e.plate {
        Some(p) => format!(
            "<strong>{}</strong> · {:.0}%{}",
            esc(&p.text),
            p.confidence * 100.0,
            if p.valid {
                ""
            } else {
                " · không đúng mẫu biển số / not a valid plate pattern"
            }
        ),
        None => "Không đọc được / not read".into(),
    };
    row(&mut t, "Biển số", "Plate", &plate);
    row(
        &mut t,
        "Giá trị đo",
        "Measured",
        &measured_html(&e.measured),
    );
    row(
        &mut t,
        "Quy tắc",
        "Rule",
        &format!("{} · {}", esc(&e.rule), esc(&e.severity)),
    );
    let review = match &e.review {
        Some(rv) => format!(
            "{} · {} · {}{}",
            esc(match rv.status.as_str() {
                "confirmed" => "Đã xác nhận / confirmed",
                "rejected" => "Đã bác bỏ / rejected",
                other => other,
            }),
            esc(if rv.reviewer.is_empty() {
                "—"
            } else {
                &rv.reviewer
            }),
            esc(&local_time(&rv.at, r.tz)),
            if rv.note.is_empty() {
                String::new()
            } else {
                format!("<br>{}", esc(&rv.note))
            }
        ),
        None => "Chờ xem xét / pending".into(),
    };
    row(&mut t, "Kết quả xem xét", "Review", &review);
    let seal = match &r.seal {
        Seal::Valid { key_id } => format!(
            "<span class=\"ok\">Hợp lệ / valid</span>: các tệp khớp biên bản điện tử ký bởi khóa / files match the manifest signed by key <code>{}</code>",
            esc(key_id)
        ),
        Seal::Invalid(problems) => format!(
            "<span class=\"bad\">Không hợp lệ / NOT valid</span>:<br>{}",
            problems
                .iter()
                .map(|p| esc(p))
                .collect::<Vec<_>>()
                .join("<br>")
        ),
    };
    row(&mut t, "Chữ ký số", "Signature", &seal);
    row(
        &mut t,
        "Dấu vân tay",
        "Fingerprint",
        &format!(
            "manifest.json sha256 <code>{}</code>",
            esc(r.manifest_sha256.as_deref().unwrap_or("—"))
        ),
    );
    row(
        &mut t,
        "Mã sự kiện",
        "Event id",
        &format!("<code>{id}</code>"),
    );
    let pics: String = [("overview.jpg", "Ảnh toàn cảnh / overview"), ("closeup.jpg", "Ảnh cận cảnh / close-up"), ("plate.jpg", "Biển số / plate")]
        .iter()
        .filter(|(f, _)| e.files.iter().any(|x| x == f))
        .map(|(f, cap)| format!("<figure><img src=\"/evidence/{id}/{f}\" alt=\"{cap}\"><figcaption class=\"muted\">{cap}</figcaption></figure>"))
        .collect();
    format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\"><title>Biên bản {id}</title>{STYLE}</head><body>\
         <h1>Biên bản ghi nhận vi phạm</h1><p class=\"muted\">Violation record · {agent}</p>\
         <table>{t}</table><h2>Hình ảnh / Pictures</h2><div class=\"pics\">{pics}</div>\
         <h2>Kiểm tra lại / Check it again</h2><p class=\"muted\">Thư mục chứng cứ / evidence folder: <code>{id}</code>. \
         <code>ioc-agent verify --trust agent-keys.txt &lt;folder&gt;</code> kiểm tra mọi tệp và chữ ký với khóa đã ghim của camera \
         (checks every file and the signature against the agent's pinned key); the fingerprint above must match.</p>\
         </body></html>",
        agent = esc(r.agent_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_times_are_local() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(
            local_time("2026-12-01T10:04:12.345Z", chrono_tz::Asia::Ho_Chi_Minh),
            "01/12/2026 17:04:12 (UTC+07:00)"
        );
        assert_eq!(local_time("not a time", chrono_tz::UTC), "not a time");
    }
}
