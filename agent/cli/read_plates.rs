//! `ioc-agent read-plates`: the plate cascade on a picture file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::evidence::plates::{PlateModels, Reading};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
    image: PathBuf,
}

pub fn run(Args { config, image }: Args) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config)?;
    super::init_tracing("warn");
    let readings = super::multi_thread()?
        .block_on(read_image(&cfg, &image))
        .map_err(anyhow::Error::msg)?;
    if readings.is_empty() {
        println!("no plate found");
        return Ok(ExitCode::from(1));
    }
    for (vehicle, r) in readings {
        println!(
            "plate text={} raw={:?} confidence={:.3} valid={} two_rows={} box=[{:.0},{:.0},{:.0},{:.0}] detector={:.2} vehicle={vehicle}",
            r.plate.text,
            r.raw,
            r.plate.confidence,
            r.plate.valid,
            r.plate.two_rows,
            r.bbox[0],
            r.bbox[1],
            r.bbox[2],
            r.bbox[3],
            r.detector_score
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the plates of every vehicle in a picture file, the way the agent does
/// on tracks: the camera detector finds vehicles, the plate cascade reads them.
/// Needs `evidence.plates` in the config. Returns (vehicle label, reading).
async fn read_image(
    cfg: &Config,
    path: &std::path::Path,
) -> Result<Vec<(String, Reading)>, String> {
    let pc = cfg
        .evidence
        .plates
        .as_ref()
        .ok_or("the config has no [evidence.plates]; add detector and reader models there")?;
    let img = image::open(path)
        .map_err(|e| format!("cannot read picture {}: {e}", path.display()))?
        .to_rgb8();
    let frame = Arc::new(crate::evidence::rgb_to_frame(&img));
    let vehicle_model = cfg
        .models
        .iter()
        .map(|m| m.name.get_ref().as_str())
        .find(|n| *n != pc.detector.get_ref() && *n != pc.reader.get_ref())
        .ok_or("no vehicle detector: list one in [[models]] besides the plate models")?;
    let names = [vehicle_model, pc.detector.get_ref(), pc.reader.get_ref()];
    let detectors = crate::run::load_named(cfg, &names).map_err(|e| e.to_string())?;
    let main = detectors
        .get(vehicle_model)
        .ok_or("vehicle detector not loaded")?;
    let models = PlateModels {
        detector: detectors
            .get(pc.detector.get_ref())
            .ok_or("plate detector not loaded")?
            .clone(),
        reader: detectors
            .get(pc.reader.get_ref())
            .ok_or("plate reader not loaded")?
            .clone(),
    };
    let found = main
        .detect(frame.clone())
        .await
        .map_err(|e| e.to_string())?;
    let labels = &main.manifest.labels;
    let mut out = Vec::new();
    for d in &found.detections {
        let Some(label) = labels.get(d.class) else {
            continue;
        };
        if !pc.classes.contains(label) {
            continue;
        }
        if let Some(r) = models
            .read(frame.clone(), d.bbox)
            .await
            .map_err(|e| e.to_string())?
        {
            out.push((label.clone(), r));
        }
    }
    Ok(out)
}
