//! Checking a parsed config: every problem is collected with its place
//! (`file:line:column`) and the fix; nothing stops at the first one. Each
//! part of the file has its own check; the rules' checks live with the rules
//! (`rules::config::check_camera_rules`).

use std::collections::{HashMap, HashSet};

use super::{CameraConfig, Collector, Config, Manifest, SignalSource, model_labels};
use crate::rules::config::{CameraModels, ModelLabels};
use crate::rules::controller::VerifyingKey;

/// Model names with their manifests (None when the manifest did not load).
type Manifests = Vec<(String, Option<Manifest>)>;

impl Config {
    pub(super) fn validate(&self, c: &mut Collector) {
        self.check_agent_id(c);
        self.check_mqtt(c);
        self.check_evidence_and_http(c);
        let manifests = self.check_models(c);
        let all_models: Vec<_> = manifests
            .iter()
            .map(|(n, m)| (n.as_str(), m.as_ref().map(model_labels)))
            .collect();
        let mut ids = HashSet::new();
        for cam in &self.cameras {
            self.check_camera(cam, &manifests, &all_models, &mut ids, c);
            check_place(cam, c);
        }
        self.check_signal_keys(c);
    }

    /// Key files must hold a key, and cameras sharing a signal topic must
    /// trust the same controller (the topic has one subscription).
    fn check_signal_keys(&self, c: &mut Collector) {
        let mut by_topic: HashMap<&str, (&str, Option<VerifyingKey>)> = HashMap::new();
        for cam in &self.cameras {
            let Some(sig) = cam.signal.as_ref() else {
                continue;
            };
            if *sig.source.get_ref() != SignalSource::Mqtt {
                continue;
            }
            let key = match self.signal_key(sig) {
                Ok(k) => k,
                Err(msg) => {
                    if let (None, Some(f)) = (&sig.controller_key, &sig.controller_key_file) {
                        c.at(f.span(), msg);
                    }
                    continue;
                }
            };
            let Some(topic) = &sig.topic else { continue };
            let cid = cam.id.get_ref();
            match by_topic.get(topic.get_ref().as_str()) {
                None => {
                    by_topic.insert(topic.get_ref(), (cid, key));
                }
                Some((other, k)) if *k != key => c.at(
                    topic.span(),
                    format!(
                        "cameras '{other}' and '{cid}' read signal topic '{}' but trust different controller keys (or one has none) — give them the same controller_key",
                        topic.get_ref()
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn check_agent_id(&self, c: &mut Collector) {
        let id = self.agent_id.get_ref();
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.at(
                self.agent_id.span(),
                "agent_id must be non-empty and use only letters, digits, '-' and '_' (it is part of MQTT topics)",
            );
        }
        if self.time_zone.get_ref().parse::<chrono_tz::Tz>().is_err() {
            c.at(
                self.time_zone.span(),
                format!(
                    "time_zone '{}' is not a time zone; use an IANA name such as \"Asia/Ho_Chi_Minh\"",
                    self.time_zone.get_ref()
                ),
            );
        }
    }

    fn check_mqtt(&self, c: &mut Collector) {
        if let Err(msg) = crate::publish::BrokerAddress::parse(self.mqtt.url.get_ref()) {
            c.at(self.mqtt.url.span(), msg);
        }
        for (i, u) in self.mqtt.failover_urls.iter().enumerate() {
            if let Err(msg) = crate::publish::BrokerAddress::parse(u.get_ref()) {
                c.at(u.span(), format!("mqtt.failover_urls[{i}]: {msg}"));
            } else if u.get_ref() == self.mqtt.url.get_ref()
                || self.mqtt.failover_urls[..i]
                    .iter()
                    .any(|o| o.get_ref() == u.get_ref())
            {
                c.at(
                    u.span(),
                    format!(
                        "mqtt.failover_urls[{i}] ({}) is already in the list; give each broker once",
                        u.get_ref()
                    ),
                );
            }
        }
        if self.mqtt.failover_urls.len() > 16 {
            c.at_key(
                "mqtt",
                "failover_urls",
                "mqtt.failover_urls takes at most 16 brokers",
            );
        }
        let secrets = [
            self.mqtt.password.is_some(),
            self.mqtt.password_file.is_some(),
            self.mqtt.password_env.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            c.at(
                self.mqtt.url.span(),
                "give the MQTT password one way only: password, password_file or password_env",
            );
        }
        if secrets.iter().any(|s| *s) && self.mqtt.username.is_none() {
            c.at(self.mqtt.url.span(), "an MQTT password needs mqtt.username");
        }
        if self.mqtt.outbox_max_rows == 0 || self.mqtt.outbox_max_bytes < 64 * 1024 {
            c.at(
                self.mqtt.url.span(),
                "mqtt.outbox_max_rows must be at least 1 and mqtt.outbox_max_bytes at least 65536",
            );
        }
        for (key, v, lo, hi) in [
            (
                "status_interval_secs",
                self.mqtt.status_interval_secs,
                1,
                86_400,
            ),
            (
                "stats_interval_secs",
                self.mqtt.stats_interval_secs,
                1,
                86_400,
            ),
            ("keep_alive_secs", self.mqtt.keep_alive_secs, 5, 3_600),
            ("failback_secs", self.mqtt.failback_secs, 0, 86_400),
        ] {
            if !(lo..=hi).contains(&v) {
                c.at_key(
                    "mqtt",
                    key,
                    format!("mqtt.{key} must be between {lo} and {hi} seconds, got {v}"),
                );
            }
        }
        if self.mqtt.cert_file.is_some() != self.mqtt.key_file.is_some() {
            c.at(
                self.mqtt.url.span(),
                "mqtt.cert_file and mqtt.key_file must be given together (mutual TLS)",
            );
        }
        if self.mqtt.topic_prefix.is_empty()
            || self.mqtt.topic_prefix.contains(['#', '+'])
            || self.mqtt.topic_prefix.ends_with('/')
        {
            c.at(
                0..0,
                "mqtt.topic_prefix must be non-empty, without '#', '+' or a trailing '/'",
            );
        }
    }

    fn check_evidence_and_http(&self, c: &mut Collector) {
        let ev = &self.evidence;
        if !(0.0..=120.0).contains(&ev.pre_secs) || !(0.0..=120.0).contains(&ev.post_secs) {
            c.at_key(
                "evidence",
                "pre_secs",
                "evidence.pre_secs and evidence.post_secs must be between 0 and 120",
            );
        }
        if !(ev.max_held_share.is_finite() && (0.0..=1.0).contains(&ev.max_held_share)) {
            c.at_key(
                "evidence",
                "max_held_share",
                "evidence.max_held_share must be a share between 0 and 1 (e.g. 0.5: held evidence may use half of max_bytes)",
            );
        }
        if !(1 << 20..=1 << 32).contains(&ev.ring_bytes) {
            c.at_key(
                "evidence",
                "ring_bytes",
                "evidence.ring_bytes must be between 1048576 (1 MiB) and 4294967296 (4 GiB); the default 33554432 holds about 50 s of a 4 Mbit/s stream",
            );
        }
        if !(1 << 20..=1 << 36).contains(&ev.ring_total_bytes) {
            c.at_key(
                "evidence",
                "ring_total_bytes",
                "evidence.ring_total_bytes must be between 1048576 (1 MiB) and 68719476736 (64 GiB); it is shared by all cameras' rings (default 536870912)",
            );
        } else {
            let n = self.cameras.iter().filter(|c| c.enabled).count().max(1) as u64;
            if ev.ring_total_bytes / n < 1 << 20 {
                c.at_key(
                    "evidence",
                    "ring_total_bytes",
                    format!(
                        "evidence.ring_total_bytes gives each of the {n} cameras {} bytes of pre-roll, under 1 MiB; raise it to at least {}",
                        ev.ring_total_bytes / n,
                        n << 20
                    ),
                );
            }
        }
        if !(1..=4096).contains(&ev.max_pending) {
            c.at_key(
                "evidence",
                "max_pending",
                "evidence.max_pending must be between 1 and 4096 (default 64)",
            );
        }
        if !(ev.max_clip_secs.is_finite()
            && ev.max_clip_secs >= ev.pre_secs + ev.post_secs
            && ev.max_clip_secs <= 600.0)
        {
            c.at_key(
                "evidence",
                "max_clip_secs",
                format!(
                    "evidence.max_clip_secs must be between pre_secs + post_secs ({}) and 600",
                    ev.pre_secs + ev.post_secs
                ),
            );
        }
        if let Some(h) = &self.http {
            if h.listen.parse::<std::net::SocketAddr>().is_err() {
                c.at_key(
                    "http",
                    "listen",
                    format!(
                        "http.listen '{}' is not an address; write it as 127.0.0.1:8080",
                        h.listen
                    ),
                );
            }
            let ways = |a: bool, b: bool, c: bool| [a, b, c].iter().filter(|x| **x).count();
            let n = ways(
                h.token.is_some(),
                h.token_file.is_some(),
                h.token_env.is_some(),
            );
            if n > 1 {
                c.at_key(
                    "http",
                    "token",
                    "http: give the token one way only: token, token_file or token_env",
                );
            }
            if n == 0 && h.users.is_empty() {
                c.at_key(
                    "http",
                    "listen",
                    "http needs someone to log in: add [[http.users]] (name, role, token_file), or a single token for every role",
                );
            }
            let short =
                "is too short; use at least 16 random characters (e.g. `openssl rand -hex 16`)";
            if h.token.as_ref().is_some_and(|t| t.len() < 16) {
                c.at_key("http", "token", format!("http.token {short}"));
            }
            let mut names = std::collections::BTreeSet::new();
            for u in &h.users {
                let ok_name = !u.name.is_empty()
                    && u.name.len() <= 64
                    && u.name != "admin"
                    && u.name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'));
                if !ok_name {
                    c.at_key("http", "users", format!(
                        "http.users name '{}' is not allowed; use 1–64 letters, digits, '.', '-' or '_' (and not 'admin', which is the single token's user)",
                        u.name
                    ));
                }
                if !names.insert(u.name.as_str()) {
                    c.at_key("http", "users", format!("http.users name '{}' is used twice; names must be unique (reviews record them)", u.name));
                }
                if ways(
                    u.token.is_some(),
                    u.token_file.is_some(),
                    u.token_env.is_some(),
                ) != 1
                {
                    c.at_key("http", "users", format!(
                        "http.users '{}' needs a token, given one way only: token, token_file or token_env",
                        u.name
                    ));
                }
                if u.token.as_ref().is_some_and(|t| t.len() < 16) {
                    c.at_key(
                        "http",
                        "users",
                        format!("http.users '{}': token {short}", u.name),
                    );
                }
            }
            if h.tls_cert_file.is_some() != h.tls_key_file.is_some() {
                c.at_key(
                    "http",
                    "tls_cert_file",
                    "http: HTTPS needs both tls_cert_file and tls_key_file",
                );
            }
            if !(1..=10_000).contains(&h.max_connections) {
                c.at_key(
                    "http",
                    "max_connections",
                    "http.max_connections must be between 1 and 10000",
                );
            }
            if !(h.header_timeout_secs.is_finite()
                && (1.0..=300.0).contains(&h.header_timeout_secs))
            {
                c.at_key(
                    "http",
                    "header_timeout_secs",
                    "http.header_timeout_secs must be a number of seconds between 1 and 300",
                );
            }
            if !(h.session_hours.is_finite() && (0.1..=168.0).contains(&h.session_hours)) {
                c.at_key(
                    "http",
                    "session_hours",
                    "http.session_hours must be a number of hours between 0.1 and 168",
                );
            }
        }
        if let Some(p) = &ev.plates {
            for m in [&p.detector, &p.reader] {
                if !self.models.iter().any(|x| x.name.get_ref() == m.get_ref()) {
                    c.at(
                        m.span(),
                        format!(
                            "plate model '{}' is not in [[models]]; add it there",
                            m.get_ref()
                        ),
                    );
                }
            }
        }
    }

    /// Manifests must exist and parse; model settings must be in range.
    fn check_models(&self, c: &mut Collector) -> Manifests {
        let mut manifests: Vec<(String, Option<Manifest>)> = Vec::new();
        for m in &self.models {
            let name = m.name.get_ref();
            if manifests.iter().any(|(n, _)| n == name) {
                c.at(m.name.span(), format!("model '{name}' is listed twice"));
                continue;
            }
            let mpath = self.manifest_path(name);
            match Manifest::load(&mpath) {
                Ok(man) => manifests.push((name.clone(), Some(man))),
                Err(e) => {
                    c.at(m.name.span(), format!("model '{name}': {e}"));
                    manifests.push((name.clone(), None));
                }
            }
            if m.intra_threads == 0 {
                c.at(m.name.span(), "intra_threads must be at least 1");
            }
            if m.workers > 16 {
                c.at(
                    m.name.span(),
                    format!("workers must be 0 (automatic) to 16, got {}", m.workers),
                );
            }
            for p in &m.providers {
                if crate::infer::providers::Provider::parse(p.get_ref()).is_none() {
                    c.at(
                        p.span(),
                        format!(
                            "unknown execution provider '{}'; use some of {:?} (best first)",
                            p.get_ref(),
                            crate::infer::providers::NAMES
                        ),
                    );
                }
            }
            if m.score_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                c.at(m.name.span(), "score_threshold must be between 0 and 1");
            }
        }

        manifests
    }

    fn check_camera(
        &self,
        cam: &CameraConfig,
        manifests: &Manifests,
        all_models: &[(&str, Option<ModelLabels<'_>>)],
        ids: &mut HashSet<String>,
        c: &mut Collector,
    ) {
        let cid = cam.id.get_ref();
        if cid.is_empty()
            || !cid
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.at(
                cam.id.span(),
                "camera id must be non-empty and use only letters, digits, '-' and '_'",
            );
        }
        if !ids.insert(cid.clone()) {
            c.at(
                cam.id.span(),
                format!("camera id '{cid}' is used twice; ids must be unique"),
            );
        }
        for u in std::iter::once(&cam.url).chain(cam.detect_url.iter()) {
            match crate::source::parse_rtsp_url(u.get_ref()) {
                Err(msg) => c.at(u.span(), msg),
                Ok((_, Some(_))) if cam.username.is_some() => c.at(
                    u.span(),
                    format!(
                        "camera '{}': credentials are both in the URL and in username/password_file; give them one way (prefer password_file)",
                        cam.id.get_ref()
                    ),
                ),
                Ok(_) => {}
            }
        }
        let pw_ways = [cam.password_file.is_some(), cam.password_env.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if pw_ways > 1 {
            c.at(
                cam.id.span(),
                format!(
                    "camera '{}': give password_file or password_env, not both",
                    cam.id.get_ref()
                ),
            );
        }
        if (pw_ways > 0) != cam.username.is_some() {
            c.at(
                cam.id.span(),
                format!(
                    "camera '{}': username and a password (password_file or password_env) go together",
                    cam.id.get_ref()
                ),
            );
        }
        let fps = *cam.detect_fps.get_ref();
        if !(fps > 0.0 && fps <= 60.0) {
            c.at(
                cam.detect_fps.span(),
                format!("detect_fps must be in (0, 60], got {fps}"),
            );
        }
        if cam.decoder.is_some() && !cam.decoders.is_empty() {
            c.at(
                cam.id.span(),
                "set either `decoder` (one element, no fallback) or `decoders` (a ranking with fallback), not both",
            );
        }
        if !(cam.priority > 0.0 && cam.priority <= 100.0) {
            c.at(
                cam.id.span(),
                format!(
                    "priority must be in (0, 100] (a weight; default 1), got {}",
                    cam.priority
                ),
            );
        }
        // Every number finite and bounded: a NaN or infinite duration once
        // passed here and then panicked the camera task.
        for (key, v, lo, hi) in [
            ("connect_timeout_secs", cam.connect_timeout_secs, 0.5, 300.0),
            (
                "inactivity_timeout_secs",
                cam.inactivity_timeout_secs,
                1.0,
                600.0,
            ),
            (
                "keyframe_timeout_secs",
                cam.keyframe_timeout_secs,
                2.0,
                600.0,
            ),
            ("backoff_min_secs", cam.backoff_min_secs, 0.1, 600.0),
            ("backoff_max_secs", cam.backoff_max_secs, 0.1, 3_600.0),
        ] {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                c.at(
                    cam.id.span(),
                    format!("camera '{}': {key} must be a number of seconds between {lo} and {hi}, got {v}", cam.id.get_ref()),
                );
            }
        }
        if cam.backoff_max_secs < cam.backoff_min_secs {
            c.at(
                cam.id.span(),
                format!(
                    "camera '{}': backoff_min_secs must not be above backoff_max_secs",
                    cam.id.get_ref()
                ),
            );
        }
        if !(0.1..=60.0).contains(&cam.quiet_refresh_secs) {
            c.at(
                cam.id.span(),
                format!(
                    "camera '{}': quiet_refresh_secs must be between 0.1 and 60 seconds, got {}",
                    cam.id.get_ref(),
                    cam.quiet_refresh_secs
                ),
            );
        }
        if !(64..=4096).contains(&cam.thumbnail_max_side) {
            c.at(
                cam.id.span(),
                format!(
                    "camera '{}': thumbnail_max_side must be between 64 and 4096 pixels, got {}",
                    cam.id.get_ref(),
                    cam.thumbnail_max_side
                ),
            );
        }
        // Which model does this camera use?
        let manifest = match &cam.model {
            Some(m) => match manifests.iter().find(|(n, _)| n == m.get_ref()) {
                Some((_, man)) => man.as_ref(),
                None => {
                    c.at(
                        m.span(),
                        format!(
                            "camera '{cid}' uses model '{}', which is not in [[models]] — add it there or fix the name",
                            m.get_ref()
                        ),
                    );
                    None
                }
            },
            None => {
                if manifests.is_empty() && !cam.rules.is_empty() {
                    c.at(
                        cam.id.span(),
                        format!("camera '{cid}' has rules but no [[models]] are configured"),
                    );
                }
                manifests.first().and_then(|(_, m)| m.as_ref())
            }
        };
        if let Some(man) = manifest
            && man.output.kind() == "classifier"
        {
            c.at(
                cam.model.as_ref().map(|m| m.span()).unwrap_or(cam.id.span()),
                format!("camera '{cid}' would use classifier '{}' as its detector; set `model` to a detector (classifiers serve cascade rules)", man.name),
            );
        }

        let detector = manifest.map(model_labels);
        let models = CameraModels {
            camera: cid,
            detector,
            models: all_models,
        };
        crate::rules::config::check_camera_rules(&cam.rule_setup(), &models, c);
    }
}

/// `[cameras.place]`: a name, coordinates on the globe (both or neither), a
/// compass heading, and administrative codes of the official lengths.
fn check_place(cam: &CameraConfig, c: &mut Collector) {
    let Some(place) = &cam.place else {
        return;
    };
    let span = place.span();
    let p = place.get_ref();
    let cid = cam.id.get_ref();
    let mut bad = |msg: String| c.at(span.clone(), format!("camera '{cid}': place: {msg}"));
    let name = p.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bad("`name` must be 1 to 200 characters: the name people know the spot by (e.g. \"Ngã tư Hàng Bạc – Đinh Liệt\")".into());
    }
    if p.address.as_ref().is_some_and(|a| a.chars().count() > 300) {
        bad("`address` is longer than 300 characters".into());
    }
    match (p.lat, p.lon) {
        (Some(lat), Some(lon)) => {
            if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                bad(format!(
                    "`lat` must be a latitude in degrees, -90 to 90, got {lat}"
                ));
            }
            if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                bad(format!(
                    "`lon` must be a longitude in degrees, -180 to 180, got {lon}"
                ));
            }
        }
        (None, None) => {}
        _ => bad(
            "give `lat` and `lon` together (WGS 84 degrees, e.g. lat = 21.0341, lon = 105.8520)"
                .into(),
        ),
    }
    if let Some(h) = p.heading_deg
        && !(h.is_finite() && (0.0..360.0).contains(&h))
    {
        bad(format!(
            "`heading_deg` must be degrees clockwise from north, 0 to below 360, got {h}"
        ));
    }
    for (key, unit, digits) in [
        ("ward", &p.ward, 5),
        ("district", &p.district, 3),
        ("province", &p.province, 2),
    ] {
        let Some(u) = unit else { continue };
        if u.code.len() != digits || !u.code.bytes().all(|b| b.is_ascii_digit()) {
            bad(format!(
                "`{key}.code` must be the official {digits}-digit code (as a string, leading zeros kept), got {:?}",
                u.code
            ));
        }
        if u.name.trim().is_empty() || u.name.chars().count() > 100 {
            bad(format!("`{key}.name` must be 1 to 100 characters"));
        }
    }
}
