//! Loading the models the enabled cameras use, each as a pool of inference
//! workers, before anything starts (a missing model stops the start with its
//! path and the fix).

use std::collections::HashMap;

use tracing::info;

use super::RunError;
use crate::config::Config;
use crate::decode;
use crate::infer::manifest::Manifest;
use crate::infer::{self, Detector, DetectorHandle};

/// Loads the runtime and every model the enabled cameras use: their
/// detectors, their rules' cascade models and, with evidence, the plate models.
pub fn load_detectors(cfg: &Config) -> Result<HashMap<String, DetectorHandle>, RunError> {
    let mut used: Vec<&str> = Vec::new();
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        let cascades = cam
            .rules
            .iter()
            .filter_map(|r| r.model.as_ref().map(|m| m.get_ref().as_str()));
        for n in cfg.camera_model(cam).into_iter().chain(cascades) {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }
    if cfg.evidence.enabled
        && let Some(p) = &cfg.evidence.plates
    {
        for n in [p.detector.get_ref().as_str(), p.reader.get_ref().as_str()] {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }
    load_named(cfg, &used)
}

/// Loads the named models (skipping names not in `[[models]]`).
pub fn load_named(
    cfg: &Config,
    names: &[&str],
) -> Result<HashMap<String, DetectorHandle>, RunError> {
    let env = infer::init_runtime(&cfg.onnxruntime_path())?;
    let mut out = HashMap::new();
    for &name in names {
        let Some(mc) = cfg.models.iter().find(|m| m.name.get_ref() == name) else {
            continue;
        };
        let manifest = Manifest::load(&cfg.manifest_path(name))?;
        let path = cfg.model_dir().join(&manifest.file);
        // Cameras whose detector this is; a cascade or plate model has none
        // of its own and gets one worker.
        let users = cfg
            .cameras
            .iter()
            .filter(|c| c.enabled && cfg.camera_model(c) == Some(name))
            .count()
            .max(1);
        let workers = mc.worker_count(users, decode::cores());
        let load = || {
            Detector::load_on(
                env,
                manifest.clone(),
                &path,
                mc.intra_threads,
                mc.score_threshold,
                &mc.provider_list(),
            )
        };
        let det = load()?;
        let mut more = Vec::new();
        for _ in 1..workers {
            more.push(load()?);
        }
        info!(
            model = name,
            path = %path.display(),
            providers = %det.provider,
            intra_threads = mc.intra_threads,
            workers,
            "model loaded"
        );
        out.insert(name.to_string(), DetectorHandle::spawn_pool(det, more));
    }
    Ok(out)
}
