//! The generated references in docs/ match the code: the CLI reference from
//! clap's command tree, the config reference from the config types' doc
//! comments. A stale reference fails here; `make docs` (which runs this with
//! `UPDATE_DOCS=1`) rewrites both.

use std::fmt::Write;
use std::path::Path;

use crate::common;

/// Config types in reference order: source file, type, where it sits in the TOML.
const CONFIG_TYPES: &[(&str, &str, &str)] = &[
    ("agent/config/mod.rs", "Config", "Top-level keys"),
    ("agent/config/mod.rs", "MqttConfig", "[mqtt]"),
    ("agent/evidence/config.rs", "EvidenceConfig", "[evidence]"),
    (
        "agent/evidence/config.rs",
        "PlatesConfig",
        "[evidence.plates]",
    ),
    ("agent/config/mod.rs", "HttpConfig", "[http]"),
    ("agent/config/mod.rs", "ModelConfig", "[[models]]"),
    ("agent/config/mod.rs", "CameraConfig", "[[cameras]]"),
    ("agent/publish/payload.rs", "Place", "[cameras.place]"),
    (
        "agent/publish/payload.rs",
        "AdminUnit",
        "[cameras.place.ward], .district, .province",
    ),
    ("agent/rules/config.rs", "ZoneConfig", "[[cameras.zones]]"),
    ("agent/rules/config.rs", "LineConfig", "[[cameras.lines]]"),
    ("agent/rules/config.rs", "LaneConfig", "[[cameras.lanes]]"),
    (
        "agent/rules/config.rs",
        "CalibrationConfig",
        "[cameras.calibration]",
    ),
    ("agent/rules/config.rs", "SignalConfig", "[cameras.signal]"),
    ("agent/rules/config.rs", "RuleConfig", "[[cameras.rules]]"),
    (
        "agent/rules/config.rs",
        "ScheduleConfig",
        "[cameras.rules.schedule]",
    ),
];

/// Enums whose values a config key takes.
const CONFIG_ENUMS: &[(&str, &str, &str)] = &[
    ("agent/rules/config.rs", "RuleKind", "cameras.rules.kind"),
    (
        "agent/rules/config.rs",
        "Direction",
        "cameras.rules.direction",
    ),
    (
        "agent/rules/config.rs",
        "CropRegion",
        "cameras.rules.region",
    ),
    (
        "agent/rules/config.rs",
        "SignalSource",
        "cameras.signal.source",
    ),
    ("agent/publish/mod.rs", "TopicLayout", "mqtt.topic_layout"),
];

const HEADER: &str = "<!-- generated: do not edit; `make docs` regenerates it from the code -->\n";

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of `pub struct|enum NAME {` … `}` and the doc comment above it.
fn item<'a>(src: &'a str, keyword: &str, name: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let lines: Vec<&str> = src.lines().collect();
    let head = format!("pub {keyword} {name} {{");
    let start = lines
        .iter()
        .position(|l| l.trim_start() == head)
        .unwrap_or_else(|| panic!("`{head}` not found; update CONFIG_TYPES in tests/it/docs.rs"));
    let mut doc = Vec::new();
    for l in lines[..start].iter().rev() {
        let t = l.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim());
        } else if !t.starts_with("#[") && !t.starts_with("#![") && !t.starts_with(')') {
            if t.ends_with(")]") || t.starts_with("Debug") {
                continue; // a derive spread over lines
            }
            break;
        }
    }
    doc.reverse();
    let body = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('}'))
        .copied()
        .collect();
    (doc, body)
}

/// `Spanned<Option<Vec<String>>>` → `array of strings`, as a TOML user reads it.
fn toml_type(t: &str) -> String {
    let t = t.trim().trim_end_matches(',');
    for w in ["Spanned<", "Option<"] {
        if let Some(inner) = t.strip_prefix(w) {
            return toml_type(&inner[..inner.len() - 1]);
        }
    }
    match t {
        "String" | "Secret" => "string".into(),
        "f64" | "f32" => "number".into(),
        "u32" | "u64" | "usize" | "u16" => "integer".into(),
        "bool" => "boolean".into(),
        "PathBuf" => "path".into(),
        "Vec<String>" => "array of strings".into(),
        "Vec<[f64; 2]>" => "array of [x, y] points".into(),
        _ => match t.strip_prefix("Vec<") {
            Some(inner) => format!("array of {}", toml_type(&inner[..inner.len() - 1])),
            None => format!("`{t}`"),
        },
    }
}

fn config_reference(root: &Path) -> String {
    let mut out = format!(
        "{HEADER}# Configuration reference\n\n\
         Every key of the agent's TOML config, from the doc comments of the \
         config types. Unknown keys are refused; problems are reported as \
         `file:line:column`. See the [configuration guide](config-guide.md) for \
         worked examples.\n"
    );
    for (file, name, section) in CONFIG_TYPES {
        let src = std::fs::read_to_string(root.join(file)).unwrap();
        let (doc, body) = item(&src, "struct", name);
        match section.starts_with('[') {
            true => write!(out, "\n## `{section}`\n\n").unwrap(),
            false => write!(out, "\n## {section}\n\n").unwrap(),
        }
        if !doc.is_empty() {
            write!(out, "{}\n\n", doc.join(" ")).unwrap();
        }
        writeln!(out, "<sub>`{name}` in `{file}`</sub>\n").unwrap();
        let (mut fdoc, mut defaulted, mut skipped) = (Vec::<&str>::new(), false, false);
        for l in body {
            let t = l.trim();
            if let Some(d) = t.strip_prefix("///") {
                fdoc.push(d.trim());
            } else if t.starts_with("#[serde(") {
                defaulted |= t.contains("default");
                // `skip` / `skip_deserializing` (not a TOML key), but not
                // `skip_serializing_if` (a key left out of output only).
                skipped |=
                    t.contains("skip)") || t.contains("skip,") || t.contains("skip_deserializing");
            } else if let Some(f) = t.strip_prefix("pub ") {
                let Some((key, ty)) = f.split_once(':') else {
                    continue;
                };
                if std::mem::take(&mut skipped) {
                    fdoc.clear();
                    continue; // not a TOML key
                }
                let optional = defaulted || ty.trim_start().starts_with("Option<");
                let req = if optional { "" } else { ", required" };
                let text = if fdoc.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", fdoc.join(" "))
                };
                writeln!(out, "- **`{key}`** ({}{req}){text}", toml_type(ty)).unwrap();
                fdoc.clear();
                defaulted = false;
            }
        }
    }
    out.push_str("\n## Values\n");
    for (file, name, key) in CONFIG_ENUMS {
        let src = std::fs::read_to_string(root.join(file)).unwrap();
        let (_, body) = item(&src, "enum", name);
        write!(out, "\n### `{key}`\n\n").unwrap();
        let mut vdoc = Vec::<&str>::new();
        for l in body {
            let t = l.trim();
            if let Some(d) = t.strip_prefix("///") {
                vdoc.push(d.trim());
            } else if t.starts_with('#') || t.is_empty() {
                continue;
            } else {
                let v = t.trim_end_matches(',');
                let text = if vdoc.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", vdoc.join(" "))
                };
                writeln!(out, "- `{}`{text}", snake(v)).unwrap();
                vdoc.clear();
            }
        }
    }
    out
}

fn cli_reference() -> String {
    fn walk(cmd: &mut clap::Command, path: &str, out: &mut String) {
        let help = cmd.render_long_help().to_string();
        write!(out, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end()).unwrap();
        for sub in cmd.get_subcommands_mut() {
            if sub.get_name() == "help" {
                continue;
            }
            let p = format!("{path} {}", sub.get_name());
            walk(sub, &p, out);
        }
    }
    let mut cmd = ioc_agent::cli::command();
    cmd.build();
    let mut out = format!(
        "{HEADER}# Command-line reference\n\n\
         Every subcommand of `ioc-agent` with its options, as `--help` prints \
         them. See the [command-line guide](cli-guide.md) for what to use when.\n"
    );
    walk(&mut cmd, "ioc-agent", &mut out);
    out
}

fn check(rel: &str, want: String) {
    let path = common::root().join(rel);
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, want).unwrap();
        return;
    }
    panic!(
        "{rel} is stale (the code changed); run `make docs` to regenerate it, \
         review the diff and commit it"
    );
}

#[test]
fn cli_reference_is_current() {
    check("docs/src/reference/cli.md", cli_reference());
}

#[test]
fn config_reference_is_current() {
    let text = config_reference(&common::root());
    // The reference has every section and key a real config uses.
    for k in [
        "## `[mqtt]`",
        "**`detect_fps`**",
        "`red_light`",
        "**`pre_secs`**",
    ] {
        assert!(text.contains(k), "config reference lacks {k}");
    }
    check("docs/src/reference/config.md", text);
}

#[test]
fn type_names_read_as_toml() {
    assert_eq!(
        toml_type("Spanned<Option<Vec<String>>>,"),
        "array of strings"
    );
    assert_eq!(toml_type("Option<Spanned<f64>>"), "number");
    assert_eq!(toml_type("Vec<ZoneConfig>"), "array of `ZoneConfig`");
    assert_eq!(snake("LeftToRight"), "left_to_right");
}
