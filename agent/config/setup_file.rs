//! The installer-edited settings: `<data_dir>/setup.toml`, written by the
//! setup page and merged over the config file at load.
//!
//! The config file (`/etc/ioc-agent/agent.toml`) holds secrets and stays
//! read-only to the service (ProtectSystem=strict, a ConfigMap, a read-only
//! mount); the state directory is the one place the service may write. So a
//! camera's geometry as the installer draws it lives there: a camera's
//! `zones`, `lines`, `lanes` or `calibration` written in `setup.toml` replace
//! the same key of that camera in the config file; everything else comes from
//! the config file. Problems are reported in the file they are in.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{CalibrationConfig, CameraConfig, LaneConfig, LineConfig, ZoneConfig};

/// The file's name inside `data_dir`.
pub const SETUP_FILE: &str = "setup.toml";

/// What `setup.toml` may hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetupFile {
    #[serde(default)]
    cameras: Vec<SetupCamera>,
}

/// One camera's installer-edited settings; a key left out keeps the config
/// file's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupCamera {
    id: Spanned<String>,
    #[serde(default)]
    zones: Option<Vec<ZoneConfig>>,
    #[serde(default)]
    lines: Option<Vec<LineConfig>>,
    #[serde(default)]
    lanes: Option<Vec<LaneConfig>>,
    #[serde(default)]
    calibration: Option<CalibrationConfig>,
}

/// Where the merged settings came from, for `check-config`, `doctor` and
/// the setup page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetupLayer {
    pub path: PathBuf,
    /// Cameras whose settings `setup.toml` replaced, with the keys replaced.
    pub applied: Vec<(String, Vec<&'static str>)>,
    /// Entries that matched no camera of the config file (ignored).
    pub ignored: Vec<String>,
}

/// Which `setup.toml` to merge, if any.
pub enum Setup<'a> {
    /// None: the config file alone (tests, benchmarks, `parse`).
    None,
    /// `<data_dir>/setup.toml` if it exists (`Config::load`).
    FromDataDir,
    /// This text, as if it were the file at that path (the setup page
    /// checking what it is about to write).
    Text(&'a str, &'a Path),
}

impl SetupFile {
    /// Merges the entries into `cameras`; returns what was applied.
    pub(super) fn merge_into(
        self,
        cameras: &mut [CameraConfig],
        path: &Path,
        text: &str,
        offset: usize,
    ) -> SetupLayer {
        let mut layer = SetupLayer {
            path: path.to_path_buf(),
            ..SetupLayer::default()
        };
        for s in self.cameras {
            let id = s.id.get_ref().clone();
            let Some(cam) = cameras.iter_mut().find(|c| c.id.get_ref() == &id) else {
                let (line, _) =
                    crate::base::diag::line_col(text, s.id.span().start.saturating_sub(offset));
                layer.ignored.push(format!(
                    "{}:{line}: camera '{id}' is not in the config file; its settings here are ignored — remove the entry (or add the camera back to the config file)",
                    path.display()
                ));
                continue;
            };
            let mut keys = Vec::new();
            if let Some(z) = s.zones {
                cam.zones = z;
                keys.push("zones");
            }
            if let Some(l) = s.lines {
                cam.lines = l;
                keys.push("lines");
            }
            if let Some(l) = s.lanes {
                cam.lanes = l;
                keys.push("lanes");
            }
            if let Some(c) = s.calibration {
                cam.calibration = Some(c);
                keys.push("calibration");
            }
            layer.applied.push((id, keys));
        }
        layer
    }
}

impl SetupLayer {
    /// One line for people: which file replaced what.
    pub fn summary(&self) -> String {
        if self.applied.is_empty() {
            return format!("{}: no camera settings", self.path.display());
        }
        let list = self
            .applied
            .iter()
            .map(|(id, keys)| format!("{id} ({})", keys.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        format!(
            "installer-edited settings from {} replace the config file's for: {list}",
            self.path.display()
        )
    }
}
