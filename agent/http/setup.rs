//! The installer's setup page: per camera a live snapshot with its zones,
//! lines and lanes drawn over it; the installer draws or edits them and saves.
//! Saving writes that camera's geometry to `<data_dir>/setup.toml` (the
//! config file holds secrets and stays read-only to the service; see
//! `config::setup_file`), keeps the rest of that file as it was (comments
//! too, with `toml_edit`), validates the merged result like `check-config`,
//! writes it atomically and reloads it live: the camera restarts, the others
//! keep running.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decode::Frame;

/// The newest decoded frame of each camera due for analysis, for snapshots.
#[derive(Default)]
pub struct Snapshots {
    frames: Mutex<std::collections::HashMap<String, FrameSlot>>,
}

/// A camera's newest decoded frame due for analysis, as the decode thread
/// publishes it. The setup page reads it from there rather than keeping a
/// copy of its own, so no camera holds an extra frame for a page nobody may
/// be looking at.
pub type FrameSlot = tokio::sync::watch::Receiver<Option<(u64, Arc<Frame>)>>;

impl Snapshots {
    /// Points the camera's snapshot at a session's frame slot.
    pub fn watch(&self, camera: &str, slot: FrameSlot) {
        if let Ok(mut m) = self.frames.lock() {
            m.insert(camera.to_string(), slot);
        }
    }
    pub fn get(&self, camera: &str) -> Option<Arc<Frame>> {
        let m = self.frames.lock().ok()?;
        let slot = m.get(camera)?.borrow();
        slot.as_ref().map(|(_, f)| f.clone())
    }
}

/// What the setup API needs from the running agent.
pub struct SetupState {
    pub config_path: Option<PathBuf>,
    /// The config in force (replaced on every applied reload).
    pub running: Arc<RwLock<Config>>,
    pub snapshots: Arc<Snapshots>,
    pub reload: tokio::sync::mpsc::Sender<()>,
    /// One save at a time.
    pub lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lane {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
    #[serde(default)]
    pub direction: Option<Vec<[f64; 2]>>,
}

/// A camera's geometry, as shown and as saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Geometry {
    #[serde(default)]
    pub zones: Vec<Zone>,
    #[serde(default)]
    pub lines: Vec<Line>,
    #[serde(default)]
    pub lanes: Vec<Lane>,
}

/// The running geometry of every camera.
pub fn running_geometry(cfg: &Config) -> Vec<(String, Geometry)> {
    cfg.cameras
        .iter()
        .map(|c| {
            (
                c.id.get_ref().clone(),
                Geometry {
                    zones: c
                        .zones
                        .iter()
                        .map(|z| Zone {
                            name: z.name.get_ref().clone(),
                            polygon: z.polygon.get_ref().clone(),
                        })
                        .collect(),
                    lines: c
                        .lines
                        .iter()
                        .map(|l| Line {
                            name: l.name.get_ref().clone(),
                            points: l.points.get_ref().clone(),
                        })
                        .collect(),
                    lanes: c
                        .lanes
                        .iter()
                        .map(|l| Lane {
                            name: l.name.get_ref().clone(),
                            polygon: l.polygon.get_ref().clone(),
                            direction: l.direction.as_ref().map(|d| d.get_ref().clone()),
                        })
                        .collect(),
                },
            )
        })
        .collect()
}

fn points(p: &[[f64; 2]]) -> toml_edit::Array {
    let mut a = toml_edit::Array::new();
    for [x, y] in p {
        let mut pt = toml_edit::Array::new();
        pt.push((x * 10000.0).round() / 10000.0);
        pt.push((y * 10000.0).round() / 10000.0);
        a.push(pt);
    }
    a
}

/// Replaces one `[[cameras.<kind>]]` list, keeping other keys of same-named
/// entries (e.g. a lane's `classes`).
fn replace_list(
    cam: &mut toml_edit::Table,
    kind: &str,
    items: Vec<(String, Vec<(&'static str, toml_edit::Array)>)>,
) {
    let old: Vec<toml_edit::Table> = cam
        .get(kind)
        .and_then(|i| i.as_array_of_tables())
        .map(|a| a.iter().cloned().collect())
        .unwrap_or_default();
    let mut out = toml_edit::ArrayOfTables::new();
    for (name, geo) in items {
        let mut t = old
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
            .cloned()
            .unwrap_or_default();
        t["name"] = toml_edit::value(name);
        for (k, v) in geo {
            t[k] = toml_edit::value(v);
        }
        out.push(t);
    }
    if out.is_empty() {
        cam.remove(kind);
    } else {
        cam[kind] = toml_edit::Item::ArrayOfTables(out);
    }
}

/// The heading of a new `setup.toml`.
const SETUP_HEADER: &str = "\
# Installer-edited settings, written by the setup page of ioc-agent.
# Merged over the config file at load: a camera's zones, lines, lanes or
# calibration written here replace that camera's in the config file.
# Edit by hand, then `ioc-agent check-config <config>` and reload the agent.
";

/// Camera `id`'s zones, lines and lanes replaced in the setup file's text
/// (`setup`, empty when there is none yet). A camera not yet in it starts
/// from its entries in the config file (`config`), so keys the page does not
/// edit (a lane's `classes`) are kept.
pub fn edit_geometry(config: &str, setup: &str, id: &str, g: &Geometry) -> Result<String, String> {
    let base: toml_edit::DocumentMut = config
        .parse()
        .map_err(|e| format!("the config file does not parse: {e}"))?;
    let base_cam = base
        .get("cameras")
        .and_then(|c| c.as_array_of_tables())
        .and_then(|a| {
            a.iter()
                .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
        })
        .ok_or_else(|| format!("no camera '{id}' in the config file"))?;
    let text = if setup.trim().is_empty() {
        SETUP_HEADER
    } else {
        setup
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("the setup file does not parse: {e} — fix or remove it"))?;
    if doc.get("cameras").is_none() {
        doc["cameras"] = toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new());
    }
    let cams = doc
        .get_mut("cameras")
        .and_then(|c| c.as_array_of_tables_mut())
        .ok_or("the setup file's `cameras` is not a list of [[cameras]] — fix or remove it")?;
    if !cams
        .iter()
        .any(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
    {
        let mut t = toml_edit::Table::new();
        t["id"] = toml_edit::value(id);
        for kind in ["zones", "lines", "lanes"] {
            if let Some(item) = base_cam.get(kind) {
                t[kind] = item.clone();
            }
        }
        cams.push(t);
    }
    let cam = cams
        .iter_mut()
        .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
        .ok_or_else(|| format!("no camera '{id}' in the setup file"))?;
    replace_list(
        cam,
        "zones",
        g.zones
            .iter()
            .map(|z| (z.name.clone(), vec![("polygon", points(&z.polygon))]))
            .collect(),
    );
    replace_list(
        cam,
        "lines",
        g.lines
            .iter()
            .map(|l| (l.name.clone(), vec![("points", points(&l.points))]))
            .collect(),
    );
    replace_list(
        cam,
        "lanes",
        g.lanes
            .iter()
            .map(|l| {
                let mut v = vec![("polygon", points(&l.polygon))];
                if let Some(d) = &l.direction {
                    v.push(("direction", points(d)));
                }
                (l.name.clone(), v)
            })
            .collect(),
    );
    // An empty list must still be written: leaving the key out would bring
    // back the config file's geometry.
    for kind in ["zones", "lines", "lanes"] {
        if cam.get(kind).is_none() {
            cam[kind] = toml_edit::value(toml_edit::Array::new());
        }
    }
    Ok(doc.to_string())
}

/// Writes `text` to `path` so that a reader sees the old file or the new one,
/// never half of one, and the new one survives a power cut: a temporary file
/// in the same directory, synced, renamed over, the directory synced. The old
/// file is kept as `<name>.bak`.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let hint = "the agent writes it in its data_dir, which must be writable by the service user (ReadWritePaths in the unit, a writable volume in a container)";
    let tmp = path.with_extension("toml.saving");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e} — {hint}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e} — {hint}", tmp.display()))?;
    drop(f);
    if path.exists() {
        let _ = std::fs::copy(path, path.with_extension("toml.bak"));
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot replace {}: {e} — {hint}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Validates and writes the new geometry, asks for a reload and waits until
/// the running config has it. Errors are for the installer to read.
pub async fn save(state: &SetupState, id: &str, g: &Geometry) -> Result<(), (u16, String)> {
    let _one = state.lock.lock().await;
    let path = state.config_path.clone().ok_or((
        409,
        "this agent was not started from a config file".to_string(),
    ))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| (500, format!("cannot read {}: {e}", path.display())))?;
    let setup_path = state
        .running
        .read()
        .map_err(|_| (500, "the running config is unavailable".to_string()))?
        .data_dir()
        .join(crate::config::SETUP_FILE);
    let old = match std::fs::read_to_string(&setup_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err((500, format!("cannot read {}: {e}", setup_path.display()))),
    };
    let new = edit_geometry(&text, &old, id, g).map_err(|e| (400, e))?;
    let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if let Err(e) = Config::parse_with(
        &text,
        &path,
        &base,
        crate::config::Setup::Text(&new, &setup_path),
    ) {
        return Err((400, e.to_string()));
    }
    write_atomically(&setup_path, &new).map_err(|e| (500, e))?;
    tracing::info!(camera = %id, path = %setup_path.display(), "setup page saved the camera's geometry");
    state
        .reload
        .send(())
        .await
        .map_err(|_| (500, "the agent is shutting down".to_string()))?;
    let start = Instant::now();
    loop {
        let applied = state
            .running
            .read()
            .ok()
            .map(|c| {
                running_geometry(&c)
                    .into_iter()
                    .any(|(cid, rg)| cid == id && geometry_eq(&rg, g))
            })
            .unwrap_or(false);
        if applied {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err((
                500,
                "saved, but the agent did not apply it within 15 s; see its log".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Equal up to the 4 decimals written to the file.
fn geometry_eq(a: &Geometry, b: &Geometry) -> bool {
    let r = |p: &[[f64; 2]]| -> Vec<[i64; 2]> {
        p.iter()
            .map(|[x, y]| [(x * 10000.0).round() as i64, (y * 10000.0).round() as i64])
            .collect()
    };
    a.zones.len() == b.zones.len()
        && a.lines.len() == b.lines.len()
        && a.lanes.len() == b.lanes.len()
        && a.zones
            .iter()
            .zip(&b.zones)
            .all(|(x, y)| x.name == y.name && r(&x.polygon) == r(&y.polygon))
        && a.lines
            .iter()
            .zip(&b.lines)
            .all(|(x, y)| x.name == y.name && r(&x.points) == r(&y.points))
        && a.lanes.iter().zip(&b.lanes).all(|(x, y)| {
            x.name == y.name
                && r(&x.polygon) == r(&y.polygon)
                && x.direction.as_deref().map(r) == y.direction.as_deref().map(r)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# Ward config — comments stay.
agent_id = "w"
[mqtt]
url = "mqtt://h"   # the broker

[[cameras]]
id = "a"
url = "rtsp://a/1"
[[cameras.zones]]
name = "old"
polygon = [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]
[[cameras.lanes]]
name = "l1"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
direction = [[0.0, 0.7], [1.0, 0.7]]
classes = ["car"]

[[cameras]]
id = "b"   # untouched
url = "rtsp://b/1"
"#;

    #[test]
    fn edits_one_camera_and_keeps_the_rest() {
        let g = Geometry {
            zones: vec![Zone {
                name: "drawn".into(),
                polygon: vec![[0.3, 0.3], [0.6, 0.3], [0.6, 0.6], [0.3, 0.61234567]],
            }],
            lines: vec![Line {
                name: "stop".into(),
                points: vec![[0.0, 0.8], [1.0, 0.8]],
            }],
            lanes: vec![Lane {
                name: "l1".into(),
                polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
                direction: Some(vec![[1.0, 0.7], [0.0, 0.7]]),
            }],
        };
        let out = edit_geometry(TEXT, "", "a", &g).unwrap();
        assert!(out.contains("# Installer-edited settings"), "{out}");
        assert!(
            !out.contains("url"),
            "only geometry goes to the setup file: {out}"
        );
        assert!(!out.contains("name = \"old\""));
        assert!(out.contains("[0.3, 0.6123]"), "{out}");
        assert!(out.contains("classes = [\"car\"]"), "lane keys kept: {out}");
        let v: toml::Table = out.parse().unwrap();
        let cams = v["cameras"].as_array().unwrap();
        assert_eq!(cams[0]["zones"][0]["name"].as_str(), Some("drawn"));
        assert_eq!(cams[0]["lines"][0]["points"].as_array().unwrap().len(), 2);
        assert_eq!(cams[0]["lanes"][0]["direction"][0][0].as_float(), Some(1.0));
        assert_eq!(cams.len(), 1, "only the edited camera: {out}");
        assert!(
            edit_geometry(TEXT, "", "nope", &g)
                .unwrap_err()
                .contains("no camera 'nope'")
        );
        // A second save edits the file it wrote, keeping what the installer
        // added by hand; camera b gets its own entry, empty lists written.
        let hand = out.replace("[[cameras]]", "# kept: a note by hand\n[[cameras]]");
        let again = edit_geometry(TEXT, &hand, "b", &Geometry::default()).unwrap();
        assert!(again.contains("# kept: a note by hand"), "{again}");
        let v: toml::Table = again.parse().unwrap();
        let cams = v["cameras"].as_array().unwrap();
        assert_eq!(cams.len(), 2);
        assert_eq!(cams[0]["zones"][0]["name"].as_str(), Some("drawn"));
        assert_eq!(cams[1]["id"].as_str(), Some("b"));
        assert_eq!(cams[1]["zones"].as_array().map(|a| a.len()), Some(0));
        assert!(
            edit_geometry(TEXT, "cameras = 3", "a", &g)
                .unwrap_err()
                .contains("not a list of [[cameras]]")
        );
    }
}
