//! Live reload as a pure diff of typed configs (vector's `ConfigDiff` shape):
//! which cameras start, restart, stop or keep running. No I/O, no global
//! state; the agent loop carries it out.

use std::collections::BTreeMap;

use crate::config::{CameraConfig, Config};

/// What a reload does to the cameras.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New (or newly enabled) cameras.
    pub start: Vec<String>,
    /// Running cameras whose settings changed.
    pub restart: Vec<String>,
    /// Running cameras removed or disabled.
    pub stop: Vec<String>,
    /// Running cameras left alone (no gap in their stream).
    pub keep: Vec<String>,
}

/// The diff between the cameras running and the cameras wanted, by id.
pub fn plan<C: PartialEq>(running: &BTreeMap<String, C>, wanted: &BTreeMap<String, C>) -> Plan {
    let mut p = Plan::default();
    for (id, old) in running {
        match wanted.get(id) {
            None => p.stop.push(id.clone()),
            Some(new) if new != old => p.restart.push(id.clone()),
            Some(_) => p.keep.push(id.clone()),
        }
    }
    for id in wanted.keys() {
        if !running.contains_key(id) {
            p.start.push(id.clone());
        }
    }
    p
}

/// The enabled cameras of a config, by id.
pub fn enabled_cameras(cfg: &Config) -> BTreeMap<String, CameraConfig> {
    cfg.cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| (c.id.get_ref().clone(), c.clone()))
        .collect()
}

/// Whether settings outside `[[cameras]]` differ (they need a restart).
pub fn globals_changed(old: &Config, new: &Config) -> bool {
    old.without_cameras() != new.without_cameras()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cams(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
    }

    #[test]
    fn start_restart_stop_keep() {
        let running = cams(&[("a", 1), ("b", 1), ("c", 1)]);
        let wanted = cams(&[("a", 1), ("b", 2), ("d", 1)]);
        assert_eq!(
            plan(&running, &wanted),
            Plan {
                start: vec!["d".into()],
                restart: vec!["b".into()],
                stop: vec!["c".into()],
                keep: vec!["a".into()],
            }
        );
        assert_eq!(plan(&running, &running).keep.len(), 3);
        assert_eq!(plan(&cams(&[]), &running).start.len(), 3);
    }

    fn load(text: &str) -> Config {
        let p = std::path::Path::new("agent.toml");
        Config::parse(text, p, std::path::Path::new(".")).unwrap()
    }

    const BASE: &str = r#"
agent_id = "ward-1"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[models]]
name = "yolox_nano"
[[cameras]]
id = "a"
url = "rtsp://127.0.0.1:8554/a"
[[cameras]]
id = "b"
url = "rtsp://127.0.0.1:8554/b"
"#;

    #[test]
    fn typed_configs_diff_by_value_not_by_position() {
        let old = load(BASE);
        // Camera b changes; a moves down the file (other spans) but is the same.
        let moved = BASE.replace(
            "[[cameras]]\nid = \"a\"",
            "\n\n# a comment\n[[cameras]]\nid = \"a\"",
        );
        let new = load(&moved.replace("8554/b", "8554/b2"));
        let p = plan(&enabled_cameras(&old), &enabled_cameras(&new));
        assert_eq!(p.keep, ["a"]);
        assert_eq!(p.restart, ["b"]);
        assert!(!globals_changed(&old, &new));
        let other_broker = load(&BASE.replace("1883", "1884"));
        assert!(globals_changed(&old, &other_broker));
        let disabled = load(&BASE.replace("id = \"b\"", "id = \"b\"\nenabled = false"));
        assert_eq!(
            plan(&enabled_cameras(&old), &enabled_cameras(&disabled)).stop,
            ["b"]
        );
    }
}
