//! `ioc-agent watch`: alerts and status from a broker as readable lines.
//! It connects as the agent does (the same `[mqtt]` settings, TLS and login
//! code): from the agent's config, from flags named after its keys, or both.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::base::secret::Secret;
use crate::config::Config;
use crate::publish::{BrokerAddress, MqttSettings, TopicLayout};

#[derive(clap::Args)]
pub struct Args {
    /// Broker, mqtt://host:port or mqtts://host:port (TLS, port default
    /// 8883). Default: the [mqtt] url of --config, else mqtt://127.0.0.1:1883.
    #[arg(long)]
    url: Option<String>,
    /// Topic prefix. Default: the [mqtt] topic_prefix of --config, else ioc/v1.
    #[arg(long)]
    prefix: Option<String>,
    /// Connect as this agent config's [mqtt] section does (url, TLS, login);
    /// the flags below replace its keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// mqtts://: PEM file of the CA(s) that signed the broker's certificate,
    /// as mqtt.ca_file. Default: the system bundle.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// mqtts:// with mutual TLS: this client's certificate chain (PEM), as
    /// mqtt.cert_file; with --key-file.
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,
    /// mqtts:// with mutual TLS: the certificate's private key (PEM), as
    /// mqtt.key_file.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Broker login name, as mqtt.username. With --config, replaces its
    /// login: the password then comes from --password-file or --password-env.
    #[arg(long)]
    username: Option<String>,
    /// File holding the broker password (its first line), as
    /// mqtt.password_file.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Environment variable holding the broker password, as mqtt.password_env.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// With --config, on the agent's own box: check each sealed evidence
    /// folder as its update arrives (files and signature against the
    /// agent's keys, as `ioc-agent verify --config` does) and print the result.
    #[arg(long, requires = "config")]
    verify: bool,
    /// At the IOC: fetch each sealed evidence folder from the ward agent's
    /// HTTP server at this base URL (https://ward-host:8443) as its update
    /// arrives, keep it in --into and check it against --trust.
    #[arg(long, value_name = "URL", requires_all = ["token_file", "trust"], conflicts_with = "verify")]
    fetch_from: Option<String>,
    /// With --fetch-from: file whose first line is the ward's token for a
    /// `viewer` user (it may read evidence, nothing else).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With --fetch-from: the ward agent's trust file (`ioc-agent key trust`
    /// on the box); folders are checked against these keys only.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// With --fetch-from https://: PEM file of the CA that signed the ward's
    /// HTTPS certificate. Default: the system roots.
    #[arg(long, value_name = "FILE")]
    http_ca: Option<PathBuf>,
    /// With --fetch-from: where fetched folders go (`<DIR>/<event id>/`).
    #[arg(long, value_name = "DIR", default_value = "evidence")]
    into: PathBuf,
    /// Subscribe at QoS 0: the broker keeps no session for this watch. On
    /// a NATS 2.9 cluster whose alerts the IOC reads with a JetStream
    /// durable consumer, a QoS 1 watch beside it makes that consumer lose
    /// messages (docs: Delivery) — use --qos0 there.
    #[arg(long)]
    qos0: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (settings, flags) = settings(&args)?;
    let say = move |msg: String| flags.name(msg);
    let checker = match (&args.config, args.verify) {
        (Some(path), true) => Some(Checker::new(path)?),
        _ => None,
    };
    let fetcher = match (&args.fetch_from, &args.token_file, &args.trust) {
        (Some(base), Some(token), Some(trust)) => Some(super::fetch::Fetcher::new(
            base,
            token,
            trust,
            args.http_ca.as_deref(),
            &args.into,
        )?),
        _ => None,
    };
    let on_evidence = |v: &serde_json::Value| match (&checker, &fetcher) {
        (Some(c), _) => Some(c.check(v)),
        (None, Some(f)) => Some(f.check(v)),
        _ => None,
    };
    super::current_thread()?.block_on(async {
        tokio::select! {
            r = crate::publish::watch::watch_with(&settings, &say, &on_evidence, args.qos0) => r.map_err(anyhow::Error::msg),
            _ = super::shutdown_signal() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--verify`: the agent's config, for its evidence folder and the keys it
/// trusts (read at each check: the agent may make its key after watch starts,
/// or rotate it).
struct Checker {
    cfg: Config,
}

impl Checker {
    fn new(config: &std::path::Path) -> anyhow::Result<Checker> {
        Ok(Checker {
            cfg: Config::load(config)?,
        })
    }

    /// One line: the folder checked, or what is wrong with it.
    fn check(&self, update: &serde_json::Value) -> String {
        let trust = match self
            .cfg
            .current_public_key()
            .map_err(|e| e.to_string())
            .and_then(|k| {
                crate::evidence::sign::agent_trust(k, &self.cfg.retired_keys_path())
                    .map_err(|e| e.to_string())
            }) {
            Ok(t) => t,
            Err(e) => return format!("  VERIFY FAILED: the agent's keys: {e}"),
        };
        let dir = self.cfg.evidence_dir();
        let id = update["event_id"].as_str().unwrap_or("");
        let Some(folder) =
            (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| dir.join(id))
        else {
            return format!("  VERIFY FAILED: event id {id:?} is not a folder name");
        };
        match crate::evidence::verify_folder(&folder, &trust) {
            Ok((m, _)) => format!(
                "  VERIFIED {} file(s) match the manifest signed by key {} ({})",
                m.files.len(),
                signer(&m),
                folder.display()
            ),
            Err(problems) => verify_failed(&folder, &problems),
        }
    }
}

/// The key a manifest names: its key id, or (older manifests) the key.
pub(super) fn signer(m: &crate::evidence::sign::Manifest) -> &str {
    if m.key_id.is_empty() {
        &m.public_key
    } else {
        &m.key_id
    }
}

/// `  VERIFY FAILED <folder>: <problem>; <problem>…`, the line `watch`
/// prints for a folder that does not check out.
pub(super) fn verify_failed(
    folder: &std::path::Path,
    problems: &[crate::evidence::FolderProblem],
) -> String {
    format!(
        "  VERIFY FAILED {}: {}",
        folder.display(),
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// Which settings came from flags, so messages name what the user typed.
#[derive(Clone, Copy)]
struct Flags {
    ca: bool,
    cert: bool,
    login: bool,
}

impl Flags {
    /// `msg` (worded with the `[mqtt]` keys) with the flags given instead.
    fn name(self, msg: String) -> String {
        let mut msg = msg;
        if self.cert {
            msg = msg
                .replace("mqtt.cert_file/key_file", "--cert-file/--key-file")
                .replace("mqtt.cert_file", "--cert-file")
                .replace("mqtt.key_file", "--key-file");
        }
        if self.ca {
            msg = msg.replace("mqtt.ca_file", "--ca-file");
        }
        if self.login {
            msg = msg
                .replace(
                    "mqtt.username and the password",
                    "--username and the password (--password-file or --password-env)",
                )
                .replace("mqtt.username", "--username");
        }
        msg
    }
}

/// The connection settings: the config's `[mqtt]` (if any) with the flags
/// over it; everything that cannot work is refused here, saying why.
fn settings(a: &Args) -> anyhow::Result<(MqttSettings, Flags)> {
    let mut m = match &a.config {
        Some(path) => {
            let cfg = Config::load(path)?;
            cfg.mqtt_settings().map_err(anyhow::Error::msg)?
        }
        None => MqttSettings {
            url: "mqtt://127.0.0.1:1883".into(),
            failover_urls: Vec::new(),
            failback_secs: 0,
            agent_id: "watch".into(),
            client_id: String::new(),
            topic_prefix: "ioc/v1".into(),
            topic_layout: TopicLayout::default(),
            keep_alive_secs: 30,
            status_interval_secs: 30,
            stats_interval_secs: 60,
            max_packet_bytes: 16 << 20,
            clean_session: true,
            protocol: Default::default(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
        },
    };
    m.client_id = format!("ioc-watch-{}", std::process::id());
    m.clean_session = true;
    m.max_packet_bytes = m.max_packet_bytes.max(16 << 20);
    if let Some(u) = &a.url {
        m.url = u.clone();
    }
    if let Some(p) = &a.prefix {
        m.topic_prefix = p.clone();
    }
    // Without --config every setting is a flag; with it, those given.
    let cli = a.config.is_none();
    let flags = Flags {
        ca: cli || a.ca_file.is_some(),
        cert: cli || a.cert_file.is_some() || a.key_file.is_some(),
        login: cli || a.username.is_some(),
    };
    if a.cert_file.is_some() != a.key_file.is_some() {
        bail!(
            "--cert-file and --key-file go together (mutual TLS: the certificate and its key); give both"
        );
    }
    if a.ca_file.is_some() {
        m.ca_file = a.ca_file.clone();
    }
    if a.cert_file.is_some() {
        m.cert_file = a.cert_file.clone();
        m.key_file = a.key_file.clone();
    }
    let has_password = a.password_file.is_some() || a.password_env.is_some();
    if has_password && a.username.is_none() && m.username.is_none() {
        bail!("--password-file and --password-env need --username (the broker login name)");
    }
    let password = if let Some(f) = &a.password_file {
        let text = std::fs::read_to_string(f).with_context(|| {
            format!(
                "cannot read --password-file {} — give a file this user may read (e.g. run as sudo -u ioc-agent)",
                f.display()
            )
        })?;
        Some(Secret(text.lines().next().unwrap_or("").trim().to_string()))
    } else if let Some(v) = &a.password_env {
        let p = std::env::var(v).map_err(|_| {
            anyhow::anyhow!("--password-env names ${v}, which is not set; export it first")
        })?;
        Some(Secret(p))
    } else {
        None
    };
    if let Some(u) = &a.username {
        m.username = Some(u.clone());
        m.password = password;
    } else if password.is_some() {
        m.password = password;
    }
    let addr = BrokerAddress::parse(&m.url).map_err(anyhow::Error::msg)?;
    if !addr.tls && (a.ca_file.is_some() || a.cert_file.is_some()) {
        bail!(
            "--ca-file, --cert-file and --key-file are for TLS, but {} is plain MQTT — write the broker as mqtts://{}:{}",
            m.url,
            addr.host,
            if addr.port == 1883 { 8883 } else { addr.port }
        );
    }
    Ok((m, flags))
}
