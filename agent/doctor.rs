//! `ioc-agent doctor [--config FILE]`: checks everything the agent needs on
//! this box and prints one line per check with a fix for each failure. Exit
//! status 1 when something blocks running.

use std::time::Duration;

use ort::environment::Environment;

use crate::config::{Config, ModelConfig};
use crate::decode::{self, Codec};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pass,
    /// Works, but worth fixing.
    Warn,
    /// Blocks running (or blocks a camera).
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: String,
    /// What to do (failures and warnings).
    pub fix: String,
}

fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        level: Level::Pass,
        detail: detail.into(),
        fix: String::new(),
    }
}
fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        level: Level::Fail,
        detail: detail.into(),
        fix: fix.into(),
    }
}
fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        level: Level::Warn,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn gstreamer_checks(out: &mut Vec<Check>) {
    if let Err(e) = decode::init() {
        out.push(fail(
            "GStreamer",
            e.to_string(),
            "apt install gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav",
        ));
        return;
    }
    let (maj, min, mic, _) = gstreamer::version();
    out.push(pass("GStreamer", format!("{maj}.{min}.{mic}")));
    for (el, pkg) in [
        ("appsrc", "gstreamer1.0-plugins-base"),
        ("appsink", "gstreamer1.0-plugins-base"),
        ("videoconvert", "gstreamer1.0-plugins-base"),
        ("h264parse", "gstreamer1.0-plugins-bad"),
        ("h265parse", "gstreamer1.0-plugins-bad"),
        ("mp4mux", "gstreamer1.0-plugins-good"),
    ] {
        if gstreamer::ElementFactory::find(el).is_none() {
            out.push(fail(
                format!("GStreamer element {el}"),
                "missing",
                format!("apt install {pkg}"),
            ));
        }
    }
    for codec in [Codec::H264, Codec::H265] {
        let name = format!("decoder {}", codec.as_str());
        match decode::choose_decoder(codec, None, &[]) {
            Ok(d) if decode::DecoderKind::of(&d).is_software() => out.push(pass(
                name,
                format!(
                    "{d} (software; no hardware decoder found: tried {})",
                    codec.ranked_decoders().join(", ")
                ),
            )),
            Ok(d) => out.push(pass(name, format!("{d} (hardware)"))),
            Err(e) => out.push(fail(name, e.to_string(), "apt install gstreamer1.0-libav")),
        }
    }
}

/// Runs every check; with a config also models, cameras, broker, data dir.
pub async fn run(cfg: Option<&Config>) -> Vec<Check> {
    let mut out = Vec::new();
    gstreamer_checks(&mut out);
    let env = runtime_checks(&mut out, cfg);
    let Some(cfg) = cfg else {
        return out;
    };
    for m in &cfg.models {
        out.push(model_check(cfg, m, env));
    }
    out.push(data_dir_check(cfg));
    secret_file_checks(&mut out, cfg);
    // Broker: connect (TLS handshake included) and wait for CONNACK.
    out.push(broker_check(cfg).await);
    camera_checks(&mut out, cfg).await;
    out.push(clock_check());
    out
}

/// ONNX Runtime loads (from the config's path, else the default) and which
/// execution providers it offers; the runtime when it loaded.
fn runtime_checks(out: &mut Vec<Check>, cfg: Option<&Config>) -> Option<&'static Environment> {
    let ort_path = cfg
        .map(|c| c.onnxruntime_path())
        .unwrap_or_else(crate::config::default_onnxruntime_path);
    match crate::infer::init_runtime(&ort_path) {
        Ok(env) => {
            out.push(pass(
                "ONNX Runtime",
                format!("{} (1.31.x)", ort_path.display()),
            ));
            out.push(providers_check());
            Some(env)
        }
        Err(e) => {
            out.push(fail(
                "ONNX Runtime",
                e.to_string(),
                "run `make ort` (or deploy/bootstrap.sh ort) and set `onnxruntime` in the config",
            ));
            None
        }
    }
}

/// The execution providers this build of ONNX Runtime offers.
fn providers_check() -> Check {
    let eps = crate::infer::providers::available();
    let gpu: Vec<&String> = eps
        .iter()
        .filter(|e| {
            !matches!(
                e.as_str(),
                "CPUExecutionProvider" | "AzureExecutionProvider"
            )
        })
        .collect();
    pass(
        "execution providers",
        if gpu.is_empty() {
            format!(
                "{} (CPU only in this build of ONNX Runtime)",
                eps.join(", ")
            )
        } else {
            eps.join(", ")
        },
    )
}

/// Model: file present with the manifest's sha256, and it opens (when the
/// runtime loaded).
fn model_check(cfg: &Config, m: &ModelConfig, env: Option<&Environment>) -> Check {
    let name = m.name.get_ref();
    let check = format!("model {name}");
    let manifest = match crate::infer::manifest::Manifest::load(&cfg.manifest_path(name)) {
        Ok(x) => x,
        Err(e) => {
            return fail(check, e.to_string(), "fix manifest_dir or the manifest");
        }
    };
    let path = cfg.model_dir().join(&manifest.file);
    if let Err(e) = crate::infer::verify_model_file(&manifest, &path) {
        return fail(
            check,
            e.to_string(),
            format!("ioc-agent models pull --config FILE {name} [--mirror DIR]"),
        );
    }
    let Some(env) = env else {
        return pass(
            check,
            format!("{} (sha256 ok; not opened: no runtime)", path.display()),
        );
    };
    match crate::infer::Detector::load_on(env, manifest.clone(), &path, 1, None, &m.provider_list())
    {
        Ok(d) => pass(
            check,
            format!(
                "{} sha256 {}… on {}",
                path.display(),
                &manifest.sha256[..12],
                d.provider
            ),
        ),
        Err(e) => fail(
            check,
            e.to_string(),
            "re-pull the model: ioc-agent models pull --config FILE",
        ),
    }
}

/// Data dir writable, free space.
fn data_dir_check(cfg: &Config) -> Check {
    let data = cfg.data_dir();
    let probe_file = data.join(".doctor-write-test");
    if let Err(e) = std::fs::create_dir_all(&data).and_then(|_| std::fs::write(&probe_file, b"ok"))
    {
        return fail(
            "data directory",
            format!("{}: {e}", data.display()),
            "create it and give the agent's user write access (data_dir)",
        );
    }
    let _ = std::fs::remove_file(&probe_file);
    let free = crate::evidence::free_bytes(&data).unwrap_or(0);
    let gib = free as f64 / (1u64 << 30) as f64;
    if cfg.evidence.enabled && free < cfg.evidence.min_free_bytes {
        warn(
            "data directory",
            format!(
                "{} writable, {gib:.1} GiB free (below evidence.min_free_bytes)",
                data.display()
            ),
            "free disk space or lower evidence.max_bytes / min_free_bytes",
        )
    } else {
        pass(
            "data directory",
            format!("{} writable, {gib:.1} GiB free", data.display()),
        )
    }
}

/// Every file holding a secret, key or certificate, as the config names it.
fn secret_files(cfg: &Config) -> Vec<(String, std::path::PathBuf)> {
    let mut v: Vec<(String, std::path::PathBuf)> = Vec::new();
    let m = &cfg.mqtt;
    for (k, p) in [
        ("mqtt.password_file", &m.password_file),
        ("mqtt.ca_file", &m.ca_file),
        ("mqtt.cert_file", &m.cert_file),
        ("mqtt.key_file", &m.key_file),
    ] {
        if let Some(p) = p {
            v.push((k.into(), cfg.resolve(p)));
        }
    }
    if let Some(h) = &cfg.http {
        for (k, p) in [
            ("http.token_file", &h.token_file),
            ("http.tls_cert_file", &h.tls_cert_file),
            ("http.tls_key_file", &h.tls_key_file),
        ] {
            if let Some(p) = p {
                v.push((k.into(), cfg.resolve(p)));
            }
        }
        for u in &h.users {
            if let Some(p) = &u.token_file {
                v.push((
                    format!("http.users '{}' token_file", u.name),
                    cfg.resolve(p),
                ));
            }
        }
    }
    for cam in &cfg.cameras {
        if let Some(p) = cam
            .signal
            .as_ref()
            .and_then(|s| s.controller_key_file.as_ref())
        {
            v.push((
                format!("camera '{}' signal.controller_key_file", cam.id.get_ref()),
                cfg.resolve(p.get_ref()),
            ));
        }
    }
    v
}

/// Each secret file readable by whoever runs doctor (run it as the service
/// user: `sudo -u ioc-agent ioc-agent doctor -c …`), and not by every user.
fn secret_file_checks(out: &mut Vec<Check>, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let user = std::env::var("USER").unwrap_or_else(|_| "this user".into());
    for (key, path) in secret_files(cfg) {
        let name = key.clone();
        let shown = path.display();
        match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(fail(
                name,
                format!("{key} {shown}: no such file"),
                format!("create it, or fix {key} in the config"),
            )),
            Err(e) => out.push(fail(
                name,
                format!("{key} {shown}: cannot read it as {user}: {e}"),
                format!(
                    "the service reads it as ioc-agent: chgrp ioc-agent {shown} && chmod 0640 {shown} (and run doctor as that user: sudo -u ioc-agent ioc-agent doctor -c …)"
                ),
            )),
            Ok(f) => {
                let mode = f.metadata().map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
                if mode & 0o004 != 0 {
                    out.push(warn(
                        name,
                        format!("{key} {shown}: mode {mode:04o}, readable by every local user"),
                        format!("chmod 0640 {shown} && chgrp ioc-agent {shown}"),
                    ));
                } else {
                    out.push(pass(name, format!("{key} {shown}: readable, mode {mode:04o}")));
                }
            }
        }
    }
}

/// Cameras: DESCRIBE/SETUP/PLAY like the agent, each enabled camera's `url`
/// and, when set, its `detect_url`.
async fn camera_checks(out: &mut Vec<Check>, cfg: &Config) {
    for cam in cfg.cameras.iter().filter(|c| c.enabled) {
        let id = cam.id.get_ref();
        for (what, url) in std::iter::once(("url", cam.url.get_ref()))
            .chain(cam.detect_url.as_ref().map(|u| ("detect_url", u.get_ref())))
        {
            out.push(camera_check(format!("camera {id} ({what})"), url).await);
        }
    }
}

async fn camera_check(name: String, url: &str) -> Check {
    match crate::source::RtspSource::open(url, Duration::from_secs(5), Duration::from_secs(5)).await
    {
        Ok(src) => pass(
            name,
            format!(
                "{} {}{}",
                src.url,
                src.codec.as_str(),
                src.resolution
                    .map(|(w, h)| format!(" {w}x{h}"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => {
            let msg = crate::probe::classify_error(url, e);
            fail(
                name,
                msg,
                format!(
                    "run `ioc-agent probe '{}'` for details",
                    crate::source::redact(url)
                ),
            )
        }
    }
}

async fn broker_check(cfg: &Config) -> Check {
    let url = cfg.mqtt.url.get_ref().clone();
    let opts = match cfg
        .mqtt_settings()
        .and_then(|m| crate::publish::connection_options(&m))
    {
        Ok(o) => o,
        Err(e) => return fail("MQTT broker", e, "fix [mqtt] in the config"),
    };
    let mut opts = opts;
    opts.set_client_id(format!("{}-doctor", cfg.client_id()));
    opts.set_clean_session(true);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
    let res = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    return if a.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("the broker refused the connection: {:?}", a.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let tls = url.starts_with("mqtts://");
    match res {
        Ok(Ok(())) => pass(
            "MQTT broker",
            format!(
                "{url} connected{}",
                if tls { " (TLS handshake ok)" } else { "" }
            ),
        ),
        Ok(Err(e)) => fail(
            "MQTT broker",
            format!("{url}: {e}"),
            "check mqtt.url, that the broker runs and this box may reach it; for mqtts check ca_file/cert_file/key_file",
        ),
        Err(_) => fail(
            "MQTT broker",
            format!("{url}: no answer in 8 s"),
            "check mqtt.url and firewalls between this box and the broker",
        ),
    }
}

fn clock_check() -> Check {
    match std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
    {
        Ok(o) if o.status.success() => {
            if String::from_utf8_lossy(&o.stdout).trim() == "yes" {
                pass("clock", "synchronised (NTP)")
            } else {
                warn(
                    "clock",
                    "not synchronised: alert and evidence times may be wrong",
                    "enable NTP: timedatectl set-ntp true (or install chrony)",
                )
            }
        }
        _ => warn(
            "clock",
            "synchronisation unknown (timedatectl not available here)",
            "make sure the box keeps time with NTP (chrony or systemd-timesyncd): evidence times must be exact",
        ),
    }
}

/// The table, and whether anything failed.
pub fn render(checks: &[Check]) -> (String, bool) {
    let w = checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(10);
    let mut s = String::new();
    let mut failed = false;
    for c in checks {
        let tag = match c.level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => {
                failed = true;
                "FAIL"
            }
        };
        s.push_str(&format!("{tag}  {:<w$}  {}\n", c.name, c.detail));
        if !c.fix.is_empty() {
            s.push_str(&format!("      {:<w$}  fix: {}\n", "", c.fix));
        }
    }
    (s, failed)
}
