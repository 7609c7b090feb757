//! Shared harness for integration tests: real processes on port 0 / free
//! ports — the simulator (RTSP), mosquitto, the agent — and an MQTT
//! subscriber that records everything it receives.
#![allow(dead_code)]

pub mod proxy;
pub mod rtsp;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ioc-agent");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    root().join("../shared")
}

pub fn traffic_clip() -> PathBuf {
    shared().join("videos/opencv4nodejs_traffic.mp4")
}

pub fn ort_lib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/lib/libonnxruntime.so.1.31.1"))
}

/// Verified model files, pulled once from the shared mirror.
pub fn model_dir() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = root().join("data/models");
    ONCE.call_once(|| {
        let out = Command::new(BIN)
            .args(["models", "pull", "--manifests"])
            .arg(root().join("models"))
            .arg("--dest")
            .arg(&dir)
            .arg("--mirror")
            .arg(shared().join("models"))
            .output()
            .expect("run models pull");
        assert!(
            out.status.success(),
            "models pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn terminate(&mut self) {
        unsafe_kill(self.child.id(), 15);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mosquitto broker on a free loopback port, which a test may stop and
/// restart on the same port (with its persistence, so persistent sessions survive).
pub struct Broker {
    pub port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
    extra: String,
    /// `extra` is the whole config (its own listeners and security).
    whole: bool,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// `extra` is appended to the config; `{dir}` in it is the broker's folder.
    pub fn start_with(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        // mosquitto started as root drops to its own user, which must be able
        // to write its persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        Broker {
            port: free_port(),
            proc: None,
            dir,
            extra,
            whole: false,
        }
        .launched()
    }

    /// A broker run with `conf` as its whole config (its own listeners and
    /// security; `{dir}` is the broker's folder); `port` is the listener to
    /// wait for and the one `url()` names.
    pub fn start_conf(port: u16, conf: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let extra = conf.replace("{dir}", &dir.path().display().to_string());
        Broker {
            port,
            proc: None,
            dir,
            extra,
            whole: true,
        }
        .launched()
    }

    fn launched(mut self) -> Broker {
        let conf = self.dir.path().join("mosquitto.conf");
        let text = if self.whole {
            self.extra.clone()
        } else {
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n{}\n",
                self.port,
                self.dir.path().display(),
                self.extra
            )
        };
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (is it installed? run `make test`)");
        self.proc = Some(Proc {
            child,
            name: "mosquitto",
        });
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "mosquitto did not start: {}",
            self.log()
        );
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let b = Broker {
            port: self.port,
            proc: None,
            dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
            extra: self.extra.clone(),
            whole: self.whole,
        };
        *self = b.launched();
    }

    /// SIGHUP: mosquitto reloads its config (ACL and password files).
    pub fn reload(&mut self) {
        let pid = self.proc.as_ref().expect("broker running").child.id();
        let st = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(500));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// `ioc-agent simulate` on port 0.
pub struct Sim {
    pub port: u16,
    _proc: Proc,
}

impl Sim {
    pub fn start(streams: &[(&str, &Path)]) -> Sim {
        Sim::start_with(streams, &[])
    }

    /// Files plus generated test streams (`(name, "mjpeg")`).
    pub fn start_with(streams: &[(&str, &Path)], patterns: &[(&str, &str)]) -> Sim {
        Sim::start_args(streams, patterns, &[])
    }

    /// Files served `loops` times per client session, then the stream ends.
    pub fn start_looping(streams: &[(&str, &Path)], loops: u32) -> Sim {
        Sim::start_args(streams, &[], &["--loops", &loops.to_string()])
    }

    /// Files served on a given port (a server restarted where it was).
    pub fn start_on(port: u16, streams: &[(&str, &Path)]) -> Sim {
        Sim::start_args(streams, &[], &["--listen", &format!("127.0.0.1:{port}")])
    }

    /// The simulator's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self._proc.child.id()
    }

    fn start_args(streams: &[(&str, &Path)], patterns: &[(&str, &str)], extra: &[&str]) -> Sim {
        let mut cmd = Command::new(BIN);
        cmd.arg("simulate");
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        for (name, file) in streams {
            cmd.arg("--stream")
                .arg(format!("{name}={}", file.display()));
        }
        for (name, kind) in patterns {
            cmd.arg("--pattern").arg(format!("{name}={kind}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut port = 0;
        for _ in 0..streams.len() + patterns.len() {
            let line = lines.next().expect("simulator printed nothing").unwrap();
            // serving rtsp://127.0.0.1:PORT/NAME (...)
            let after = line.split("127.0.0.1:").nth(1).expect("serving line");
            port = after.split('/').next().unwrap().parse().unwrap();
        }
        std::thread::spawn(move || for _ in lines {});
        Sim {
            port,
            _proc: Proc {
                child,
                name: "simulate",
            },
        }
    }
    pub fn url(&self, name: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{name}", self.port)
    }
}

/// `ioc-agent run` with a config written to a temp dir; stderr goes to a log file.
pub struct Agent {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(config: &str) -> Agent {
        Agent::start_in(config, |_| {})
    }

    /// As [`Agent::start`], with `prepare` given the config's folder first
    /// (for files the config names relative to itself).
    pub fn start_in(config: &str, prepare: impl FnOnce(&Path)) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let cfg = dir.path().join("agent.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.path().join("agent.log");
        // IOC_AGENT_BIN runs the agent of another build (e.g. a released
        // package's) against the same tests: how a defect is shown to fail
        // before its fix.
        let bin = std::env::var_os("IOC_AGENT_BIN").unwrap_or_else(|| BIN.into());
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info,ioc_agent::evidence=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            proc: Proc {
                child,
                name: "agent",
            },
            dir,
            log,
        }
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Config header shared by the tests: paths to the real runtime and models.
pub fn config_head(agent_id: &str, broker: &Broker, data_dir: &Path) -> String {
    config_head_url(agent_id, &broker.url(), data_dir)
}

/// As [`config_head`], for a broker at `url` that is not a [`Broker`].
pub fn config_head_url(agent_id: &str, url: &str, data_dir: &Path) -> String {
    format!(
        r#"agent_id = "{agent_id}"
data_dir = "{data}"
manifest_dir = "{manifests}"
model_dir = "{models}"
onnxruntime = "{ort}"

[mqtt]
url = "{url}"
status_interval_secs = 1
stats_interval_secs = 1
"#,
        data = data_dir.display(),
        manifests = root().join("models").display(),
        models = model_dir().display(),
        ort = ort_lib().display(),
    )
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() % 100000
}

/// A NATS server with JetStream and its MQTT listener (Debian's
/// `nats-server`): a real broker that speaks MQTT 3.1.1 only.
pub struct Nats {
    pub mqtt_port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let (mqtt_port, client_port) = (free_port(), free_port());
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: t1\nlisten: 127.0.0.1:{client_port}\njetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("nats.log")).unwrap())
            .spawn()
            .expect("start nats-server (Debian package nats-server; `make test` installs it)");
        let proc = Proc {
            child,
            name: "nats-server",
        };
        assert!(
            wait_port(mqtt_port, Duration::from_secs(15)),
            "nats-server's MQTT listener did not start: {}",
            std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default()
        );
        Nats {
            mqtt_port,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// A 3-node NATS cluster with JetStream and MQTT, started by the shipped
/// `scripts/nats-cluster.sh` (free loopback ports; stopped on drop).
pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    /// Per node 1..3: (NATS client port, MQTT port).
    pub ports: Vec<(u16, u16)>,
}

impl NatsCluster {
    pub fn script() -> PathBuf {
        root().join("scripts/nats-cluster.sh")
    }

    pub fn start() -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(Self::script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nats-cluster.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let var = |k: &str| -> u16 {
            env.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in {env}"))
                .parse()
                .unwrap()
        };
        let ports = (1..=3)
            .map(|n| (var(&format!("NATS{n}")), var(&format!("MQTT{n}"))))
            .collect();
        NatsCluster { dir, ports }
    }

    pub fn mqtt_url(&self, node: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.ports[node - 1].1)
    }

    pub fn nats_url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[node - 1].0)
    }

    pub fn pid_file(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("n{node}.pid"))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A real MQTT subscriber (separate client) recording every message.
pub struct Subscriber {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    rt: tokio::runtime::Runtime,
}

impl Subscriber {
    pub fn start(broker: &Broker, filter: &str) -> Subscriber {
        Subscriber::start_on(broker.port, filter, None)
    }

    /// A subscriber with a persistent session (`client_id` fixed, clean
    /// session off): the broker keeps its messages while it is away.
    pub fn start_on(port: u16, filter: &str, persistent_id: Option<&str>) -> Subscriber {
        Subscriber::start_full(port, filter, persistent_id, None)
    }

    /// A subscriber that logs in as `login` (user, password).
    pub fn start_login(port: u16, filter: &str, login: (&str, &str)) -> Subscriber {
        Subscriber::start_full(port, filter, None, Some(login))
    }

    fn start_full(
        port: u16,
        filter: &str,
        persistent_id: Option<&str>,
        login: Option<(&str, &str)>,
    ) -> Subscriber {
        let login = login.map(|(u, p)| (u.to_string(), p.to_string()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m = msgs.clone();
        let filter = filter.to_string();
        let persistent_id = persistent_id.map(str::to_string);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let id = persistent_id.clone().unwrap_or_else(|| {
                format!("test-sub-{}-{port}-{}", std::process::id(), rand_suffix())
            });
            let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            opts.set_max_packet_size(16 << 20, 16 << 20);
            opts.set_clean_session(persistent_id.is_none());
            if let Some((u, p)) = login {
                opts.set_credentials(u, p);
            }
            let (client, mut ev) = rumqttc::AsyncClient::new(opts, 100);
            client
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        m.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber connected");
        Subscriber { msgs, rt }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits until some message satisfies `f`; returns it.
    pub fn wait_for(&self, timeout: Duration, mut f: impl FnMut(&Msg) -> bool) -> Option<Msg> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(m) = self.msgs.lock().unwrap().iter().find(|m| f(m)) {
                return Some(m.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The newest status message, parsed.
    pub fn latest_status(&self) -> Option<serde_json::Value> {
        let m = self.msgs.lock().unwrap();
        m.iter()
            .rev()
            .find(|m| m.topic.ends_with("/status"))
            .and_then(|m| serde_json::from_slice(&m.payload).ok())
    }

    /// Alerts received so far, parsed (event updates on the same topic are not alerts).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.events("ioc.alert/1")
    }

    /// `ioc.event_update/1` messages (evidence sealed, reviews) received so far.
    pub fn updates(&self) -> Vec<serde_json::Value> {
        self.events("ioc.event_update/1")
    }

    fn events(&self, schema: &str) -> Vec<serde_json::Value> {
        self.all()
            .iter()
            .filter(|m| m.topic.ends_with("/events"))
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .filter(|v| v["schema"] == schema)
            .collect()
    }

    pub fn shutdown(self) {
        self.rt.shutdown_background();
    }
}

/// Re-encodes the traffic clip with `encoder` (e.g. `["x264enc", "key-int-max=12"]`)
/// and `parser` into an MP4 at `dest`.
pub fn transcode(dest: &Path, encoder: &[&str], parser: &str) {
    let st = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", traffic_clip().display()))
        .args([
            "!",
            "qtdemux",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=I420",
            "!",
        ])
        .args(encoder)
        .args(["!", parser, "!", "mp4mux", "!", "filesink"])
        .arg(format!("location={}", dest.display()))
        .status()
        .expect("gst-launch-1.0");
    assert!(st.success(), "transcode with {encoder:?}");
}

/// One access unit of an MP4 as Annex B bytes, with its presentation time and
/// whether it is a keyframe.
pub struct Au {
    pub data: Vec<u8>,
    pub pts_ns: u64,
    pub duration_ns: u64,
    pub keyframe: bool,
}

/// Demuxes an MP4 into access units (qtdemux → parser → byte-stream, au).
/// An evidence folder's clip as one MP4 file for [`access_units`]:
/// `clip-init.mp4` and the segments its manifest lists, concatenated (what
/// `/evidence/<id>/clip.mp4` serves) but without the init's edit list and
/// durations — GStreamer 1.22's qtdemux misreads them in a fragmented file
/// (it skips the first seconds and drops frames past the duration counted
/// from zero; ffmpeg, so Chromium, reads them right), and these tests
/// compare the bitstream, not the timeline. Or the folder's `clip.mp4`.
/// The clip exactly as `/evidence/<id>/clip.mp4` serves it: the init and
/// the segments the manifest lists, concatenated.
pub fn clip_bytes(folder: &Path) -> Vec<u8> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let clip = &m["clip"];
    let mut bytes = std::fs::read(folder.join(clip["init"].as_str().unwrap())).unwrap();
    for s in clip["segments"].as_array().unwrap() {
        bytes.extend(std::fs::read(folder.join(s.as_str().unwrap())).unwrap());
    }
    bytes
}

pub fn clip_of(folder: &Path) -> std::path::PathBuf {
    let whole = folder.join("clip.mp4");
    if whole.is_file() {
        return whole;
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let clip = &m["clip"];
    let mut bytes =
        without_edit_list(std::fs::read(folder.join(clip["init"].as_str().unwrap())).unwrap());
    for s in clip["segments"].as_array().unwrap() {
        bytes.extend(std::fs::read(folder.join(s.as_str().unwrap())).unwrap());
    }
    let name = folder.file_name().unwrap().to_string_lossy();
    let out = std::env::temp_dir().join(format!("ioc-test-clip-{name}.mp4"));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// An MP4 header as GStreamer's qtdemux reads a fragmented file right:
/// without the edit list and the fragments' total duration (`edts`,
/// `mehd`; sizes fixed) and with no movie duration.
fn without_edit_list(mut b: Vec<u8>) -> Vec<u8> {
    let find = |b: &[u8], k: &[u8]| b.windows(4).position(|w| w == k).map(|i| i - 4);
    let size = |b: &[u8], i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    for (gone, parents) in [(b"edts", [b"moov", b"trak"]), (b"mehd", [b"moov", b"mvex"])] {
        let Some(at) = find(&b, gone) else { continue };
        let n = size(&b, at);
        b.drain(at..at + n as usize);
        for k in parents {
            let i = find(&b, k).unwrap();
            let new = size(&b, i) - n;
            b[i..i + 4].copy_from_slice(&new.to_be_bytes());
        }
    }
    if let Some(i) = find(&b, b"mvhd") {
        let (at, n) = if b[i + 8] == 1 {
            (i + 32, 8)
        } else {
            (i + 24, 4)
        };
        b[at..at + n].fill(0);
    }
    b
}

pub fn access_units(path: &Path) -> Vec<Au> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let head = std::fs::read(path).unwrap();
    let h265 = head
        .windows(4)
        .any(|w| w == b"hvcC" || w == b"hev1" || w == b"hvc1");
    let (parser, caps) = if h265 {
        (
            "h265parse",
            "video/x-h265,stream-format=byte-stream,alignment=au",
        )
    } else {
        (
            "h264parse",
            "video/x-h264,stream-format=byte-stream,alignment=au",
        )
    };
    let desc = format!(
        "filesrc location=\"{}\" ! qtdemux ! {parser} ! {caps} ! appsink name=sink sync=false",
        path.display()
    );
    let pipe = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipe
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipe.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(s) = sink.pull_sample() {
        let b = s.buffer().unwrap();
        out.push(Au {
            data: b.map_readable().unwrap().to_vec(),
            pts_ns: b.pts().map(|t| t.nseconds()).unwrap_or(0),
            duration_ns: b.duration().map(|t| t.nseconds()).unwrap_or(0),
            keyframe: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
        });
    }
    pipe.set_state(gst::State::Null).unwrap();
    out
}

/// The coded slices (VCL NAL units) of an Annex B access unit: what a
/// re-encode would change and a remux must not.
pub fn coded_slices(au: &[u8], h265: bool) -> Vec<Vec<u8>> {
    rtsp::nal_units(au)
        .into_iter()
        .filter(|n| {
            if h265 {
                (n[0] >> 1) & 0x3f < 32
            } else {
                (1..=5).contains(&(n[0] & 0x1f))
            }
        })
        .map(|n| n.to_vec())
        .collect()
}

/// HTTP GET with optional headers; returns (status, headers, body).
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent = ureq::AgentBuilder::new().build();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
    (status, hs, body)
}

/// An agent's `/metrics`, parsed with a Prometheus text-format parser; None
/// while the server is not up or refuses the token. Panics on a page that is
/// not valid Prometheus text.
pub fn scrape_metrics(port: u16, token: &str) -> Option<prometheus_parse::Scrape> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (st, _, body) = http_get(
        &format!("http://127.0.0.1:{port}/metrics"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    if st != 200 {
        return None;
    }
    let text = String::from_utf8(body).expect("UTF-8 metrics");
    Some(
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid Prometheus text format"),
    )
}

/// The value of `name` for `camera` in a scrape (counters, gauges, untyped).
pub fn metric_value(s: &prometheus_parse::Scrape, name: &str, camera: &str) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && x.labels.get("camera") == Some(camera))
        .and_then(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Test certificates: a CA, a server certificate for 127.0.0.1/localhost
/// (`server.pem`/`server.key`), a client certificate and another CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let write = |n: &str, s: String| std::fs::write(dir.path().join(n), s).unwrap();
        let ca = Self::ca("ioc test CA");
        write("ca.pem", ca.pem());
        let other = Self::ca("some other CA");
        write("other-ca.pem", other.pem());
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["ward-tls".to_string()]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            let cert = p.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn ca(cn: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    pub fn path(&self, n: &str) -> String {
        self.dir.path().join(n).display().to_string()
    }
}

/// The agent's broker login on the shipped ward broker (the user its ACL file names).
pub const WARD_AGENT: (&str, &str) = ("ioc-agent", "agent-pw");
/// A traffic controller's login on the shipped ward broker (junction 12).
pub const WARD_CONTROLLER: (&str, &str) = ("junction-12", "controller-pw");

/// The ward broker of deploy/mosquitto/ as shipped: `ward-bridge.conf` and
/// the ACL files it names, run by the real mosquitto. Only what cannot run
/// here is rewritten: the listeners' ports (free loopback ports), the files'
/// folder (/etc/mosquitto → a temp dir), and the bridge's `address` (a
/// loopback `central` broker, without the TLS lines). Debian's main
/// mosquitto.conf is put in front, as `include_dir` does on the box. The
/// password files are made with `mosquitto_passwd`: [`WARD_AGENT`] in the
/// agents' listener's, [`WARD_CONTROLLER`] in the controllers'.
pub struct WardBroker {
    /// Its `port` is the agents' listener (shipped: 127.0.0.1:1883).
    pub broker: Broker,
    /// The controllers' LAN listener (shipped: port 1884, every address).
    pub controllers_port: u16,
    /// The passwords, one per file, for the agent's `password_file`.
    pub auth: tempfile::TempDir,
    /// What the shipped file lacks (see [`WardBroker::assert_listeners`]).
    pub problems: Vec<String>,
}

/// The shipped ward broker's listeners: the agents' and the controllers'.
pub const WARD_AGENTS_PORT: u16 = 1883;
pub const WARD_CONTROLLERS_PORT: u16 = 1884;

impl WardBroker {
    pub fn start(central: &Broker) -> WardBroker {
        let deploy = root().join("deploy/mosquitto");
        let text = std::fs::read_to_string(deploy.join("ward-bridge.conf")).unwrap();
        let auth = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(auth.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let agents_port = free_port();
        let controllers_port = free_port();
        let mut listener: Option<u16> = None;
        let mut listeners = Vec::new();
        let mut opened = Vec::new();
        let mut secured = Vec::new();
        let mut conf = String::from(
            "# Debian 12's /etc/mosquitto/mosquitto.conf, before its include_dir\npersistence true\npersistence_location {dir}/\n\n",
        );
        let moved = |path: &str| -> PathBuf {
            let name = path
                .strip_prefix("/etc/mosquitto/")
                .unwrap_or_else(|| panic!("{path}: expected under /etc/mosquitto/"));
            auth.path().join(name)
        };
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let out = match words.as_slice() {
                ["listener", port, rest @ ..] => {
                    let port: u16 = port.parse().expect("listener port");
                    listener = Some(port);
                    listeners.push((port, rest.first().map(|s| s.to_string())));
                    let local = match port {
                        WARD_AGENTS_PORT => agents_port,
                        WARD_CONTROLLERS_PORT => controllers_port,
                        other => panic!("ward-bridge.conf: unexpected listener port {other}"),
                    };
                    opened.push(local);
                    format!("listener {local} 127.0.0.1")
                }
                ["password_file", path] => {
                    let file = moved(path);
                    let (user, pw) = match listener {
                        Some(WARD_AGENTS_PORT) => WARD_AGENT,
                        Some(WARD_CONTROLLERS_PORT) => WARD_CONTROLLER,
                        other => panic!("ward-bridge.conf: password_file under listener {other:?}"),
                    };
                    std::fs::write(&file, "").unwrap();
                    let st = Command::new("mosquitto_passwd")
                        .arg("-b")
                        .arg(&file)
                        .args([user, pw])
                        .status()
                        .expect("mosquitto_passwd");
                    assert!(st.success(), "mosquitto_passwd {}", file.display());
                    std::fs::write(auth.path().join(format!("{user}.password")), pw).unwrap();
                    secured.push(("password_file", listener));
                    format!("password_file {}", file.display())
                }
                ["acl_file", path] => {
                    let file = moved(path);
                    let name = file.file_name().unwrap().to_owned();
                    let shipped = deploy.join(&name);
                    std::fs::copy(&shipped, &file).unwrap_or_else(|e| {
                        panic!(
                            "ward-bridge.conf names acl_file {path}, but {} is not shipped: {e}",
                            shipped.display()
                        )
                    });
                    secured.push(("acl_file", listener));
                    format!("acl_file {}", file.display())
                }
                ["address", ..] => format!("address 127.0.0.1:{}", central.port),
                [k, ..]
                    if k.starts_with("bridge_cafile")
                        || k.starts_with("bridge_certfile")
                        || k.starts_with("bridge_keyfile") =>
                {
                    continue;
                }
                _ => line.to_string(),
            };
            conf.push_str(&out);
            conf.push('\n');
        }
        let mut problems = Vec::new();
        if !listeners
            .iter()
            .any(|(p, a)| *p == WARD_AGENTS_PORT && a.as_deref() == Some("127.0.0.1"))
        {
            problems.push(format!(
                "no listener for the box's agents on 127.0.0.1:{WARD_AGENTS_PORT}: {listeners:?}"
            ));
        }
        if !listeners.iter().any(|(p, a)| {
            *p == WARD_CONTROLLERS_PORT && !a.as_deref().is_some_and(|a| a.starts_with("127."))
        }) {
            problems.push(format!(
                "no LAN listener for the traffic controllers on port {WARD_CONTROLLERS_PORT}: {listeners:?}"
            ));
        }
        for (port, _) in &listeners {
            for what in ["password_file", "acl_file"] {
                if !secured.contains(&(what, Some(*port))) {
                    problems.push(format!("the listener on port {port} has no {what}"));
                }
            }
        }
        // mosquitto started as root reads these as its own user: the modes
        // the docs give (0640 root:mosquitto).
        for f in std::fs::read_dir(auth.path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "password") {
                continue;
            }
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                let st = Command::new("chgrp")
                    .arg("mosquitto")
                    .arg(&f)
                    .status()
                    .unwrap();
                assert!(st.success(), "chgrp mosquitto {}", f.display());
            }
        }
        let broker = Broker::start_conf(agents_port, &conf);
        for port in opened {
            assert!(
                wait_port(port, Duration::from_secs(10)),
                "listener {port} did not open: {}",
                broker.log()
            );
        }
        WardBroker {
            broker,
            controllers_port,
            auth,
            problems,
        }
    }

    /// Panics naming what the shipped file lacks: the agents' loopback
    /// listener, the controllers' LAN listener, a listener's password_file
    /// or acl_file.
    pub fn assert_listeners(&self) {
        assert!(
            self.problems.is_empty(),
            "deploy/mosquitto/ward-bridge.conf: {}",
            self.problems.join("; ")
        );
    }

    /// A file holding `user`'s password (for the agent's `password_file`).
    pub fn password_file(&self, user: &str) -> PathBuf {
        self.auth.path().join(format!("{user}.password"))
    }
}
