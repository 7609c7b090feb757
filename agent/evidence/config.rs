//! `[evidence]`: what an evidence package keeps and how much disk it may use.
//! Owned by the evidence stage; `config` aggregates it.

use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

/// Evidence packages: clip, pictures, plate, signed manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Keep evidence folders for events. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where evidence folders go (`<dir>/<event_id>/`). Default `<data_dir>/evidence`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Seconds of video before the event (the clip starts on the keyframe at
    /// or before this). Default 5.
    #[serde(default = "default_pre")]
    pub pre_secs: f64,
    /// Seconds of video after the event. Default 5.
    #[serde(default = "default_post")]
    pub post_secs: f64,
    /// Bytes of encoded video kept per camera for pre-roll: a hard cap
    /// (whole GOPs are evicted; a GOP larger than this, from a camera that
    /// sends no further keyframe, has its oldest frames cut). Default 32 MiB
    /// (about 50 s of a 4 Mbit/s stream).
    #[serde(default = "default_ring")]
    pub ring_bytes: u64,
    /// Bytes of encoded video kept for all cameras together: each enabled
    /// camera's ring gets `min(ring_bytes, ring_total_bytes / cameras)`.
    /// Default 512 MiB.
    #[serde(default = "default_ring_total")]
    pub ring_total_bytes: u64,
    /// Longest clip, seconds: a clip reaches back at most `max_clip_secs -
    /// post_secs` before the event. It starts on the last keyframe at or
    /// before the pre-roll within that reach; else on the first keyframe
    /// after the pre-roll; else (no keyframe in reach: a very long GOP, or
    /// none) at the pre-roll on any frame, marked `starts_on_keyframe:
    /// false`. Default 30.
    #[serde(default = "default_max_clip")]
    pub max_clip_secs: f64,
    /// Evidence packages that may wait for their post-roll or be built at
    /// once, all cameras together; past it a package is dropped and counted
    /// (`ioc_evidence_dropped_total`), its alert still sent. Default 64.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
    /// Disk budget for all evidence, bytes. The oldest folders that are not
    /// held go first. Default 20 GiB.
    #[serde(default = "default_evidence_bytes")]
    pub max_bytes: u64,
    /// Share of `max_bytes` that held evidence (confirmed or held on the
    /// review page) may take, 0–1. Past it a hold is refused, so retention
    /// always has room for new events. Default 0.5.
    #[serde(default = "default_held_share")]
    pub max_held_share: f64,
    /// Keep at least this many bytes free on the evidence disk. Default 1 GiB.
    #[serde(default = "default_free_floor")]
    pub min_free_bytes: u64,
    /// Longest side of the overview picture, pixels. Default 1920.
    #[serde(default = "default_overview")]
    pub overview_max_side: u32,
    /// Sign through the signer process at this Unix socket (`ioc-agent
    /// signer`, the `ioc-agent-signer` unit) instead of holding the key in
    /// the agent: the process that parses camera video then never reads the
    /// key. Default: the agent's own key, `<data_dir>/agent.key`.
    #[serde(default)]
    pub signer_socket: Option<PathBuf>,
    /// Plate reading on vehicle tracks (both models must be in `[[models]]`).
    #[serde(default)]
    pub plates: Option<PlatesConfig>,
}

fn default_ring_total() -> u64 {
    512 << 20
}
fn default_max_pending() -> u32 {
    64
}
fn default_max_clip() -> f64 {
    30.0
}
fn default_held_share() -> f64 {
    0.5
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            dir: None,
            pre_secs: default_pre(),
            post_secs: default_post(),
            ring_bytes: default_ring(),
            ring_total_bytes: default_ring_total(),
            max_clip_secs: default_max_clip(),
            max_pending: default_max_pending(),
            max_bytes: default_evidence_bytes(),
            max_held_share: default_held_share(),
            min_free_bytes: default_free_floor(),
            overview_max_side: default_overview(),
            signer_socket: None,
            plates: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatesConfig {
    /// Plate detector model (manifest name). Required.
    pub detector: Spanned<String>,
    /// Plate text reader model (manifest name). Required.
    pub reader: Spanned<String>,
    /// Classes whose tracks are read. Default car, bus, truck, motorcycle.
    #[serde(default = "default_plate_classes")]
    pub classes: Vec<String>,
    /// Least seconds between two readings of one track. Default 1.
    #[serde(default = "default_one_f")]
    pub min_interval_secs: f64,
    /// Readings per track at most. Default 5.
    #[serde(default = "default_plate_reads")]
    pub max_reads_per_track: u32,
}

fn default_pre() -> f64 {
    5.0
}
fn default_post() -> f64 {
    5.0
}
fn default_ring() -> u64 {
    32 << 20
}
fn default_evidence_bytes() -> u64 {
    20 << 30
}
fn default_free_floor() -> u64 {
    1 << 30
}
fn default_overview() -> u32 {
    1920
}
fn default_plate_classes() -> Vec<String> {
    ["car", "bus", "truck", "motorcycle"]
        .map(String::from)
        .to_vec()
}
fn default_one_f() -> f64 {
    1.0
}
fn default_plate_reads() -> u32 {
    5
}
fn default_true() -> bool {
    true
}
