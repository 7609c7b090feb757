//! The k3s / Kubernetes manifests in `deploy/k8s/`, as an installer applies
//! them: every resource passes a real Kubernetes schema validator
//! (`kubernetes-validate`, strict, with the schemas it bundles; offline), and
//! the DaemonSet keeps what a schema cannot see: the hostPath made writable
//! for the image's user, agent.toml and every password from Secrets, a
//! startupProbe, metrics scraped with the scraper's token, a config mount
//! that follows an updated Secret, and a config that `check-config` passes.
//!
//! The validator is installed by `deploy/bootstrap.sh k8s` (part of `make
//! test`'s setup) into `.tools/k8s-validate`, pinned by sha256 in
//! `deploy/k8s-validate-requirements.txt`; `K8S_VALIDATE_VENV=` for another.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Kubernetes releases the manifests must be valid for: the oldest k3s line
/// still patched when this was written, and the newest schema bundled.
const KUBE_VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];

/// Kinds that no bundled schema covers (CRDs); checked field by field below.
const CRD_KINDS: [(&str, &str); 1] = [("monitoring.coreos.com/v1", "ServiceMonitor")];

fn venv() -> PathBuf {
    std::env::var_os("K8S_VALIDATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/k8s-validate"))
}

fn python() -> PathBuf {
    let py = venv().join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: the k8s schema validator is not installed — run `deploy/bootstrap.sh k8s` \
         (make test does), or set K8S_VALIDATE_VENV to a venv with kubernetes-validate",
        py.display()
    );
    py
}

/// Every YAML file in deploy/k8s/.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/k8s/");
    files
}

/// The documents of a YAML file, parsed by PyYAML (the validator's own parser).
fn documents(path: &Path) -> Vec<Value> {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        _ => unreachable!(),
    }
}

fn all_resources() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn find<'a>(res: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a Value> {
    res.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

fn daemonset(res: &[(PathBuf, Value)]) -> &Value {
    let ds = find(res, "DaemonSet");
    assert_eq!(ds.len(), 1, "deploy/k8s/ must hold exactly one DaemonSet");
    ds[0]
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn by_name<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    arr(list).iter().find(|x| x["name"] == name)
}

/// Each manifest, at each Kubernetes version, strict (unknown fields are
/// errors). A kind without a bundled schema fails unless it is a listed CRD.
#[test]
fn k8s_manifests_pass_the_kubernetes_schema() {
    let py = python();
    for file in manifest_files() {
        for version in KUBE_VERSIONS {
            let out = Command::new(&py)
                .args(["-m", "kubernetes_validate", "--strict", "-k", version])
                .arg(&file)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("{}", text.trim_end());
            assert!(
                out.status.success(),
                "{} is not valid for Kubernetes {version}:\n{text}",
                file.display()
            );
            for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
                assert!(
                    CRD_KINDS
                        .iter()
                        .any(|(api, kind)| line
                            .contains(&format!("kind {kind} with api version {api}"))),
                    "{}: no schema checked this resource ({line}): use a built-in kind, or list the CRD in CRD_KINDS and check its fields",
                    file.display()
                );
            }
        }
    }
}

/// The numeric ids the image gives `ioc-agent`: `groupadd --gid G` and
/// `useradd --uid U --gid G`, created before the runtime stage installs any
/// package (a package's system group would otherwise take the id: in the
/// image built before this, systemd-journal had 999 and ioc-agent got 997).
fn image_ids() -> (u64, u64) {
    let text = std::fs::read_to_string(root().join("deploy/Containerfile")).unwrap();
    let runtime: String = text
        .rsplit_once("FROM ${RUNTIME_IMAGE}")
        .expect("Containerfile has a runtime stage FROM ${RUNTIME_IMAGE}")
        .1
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let flag = |line: &str, f: &str| -> Option<u64> {
        let mut it = line.split_whitespace();
        it.find(|w| *w == f)?;
        it.next()?.parse().ok()
    };
    let gline = runtime.lines().find(|l| l.contains("groupadd"));
    let uline = runtime.lines().find(|l| l.contains("useradd"));
    let (Some(gline), Some(uline)) = (gline, uline) else {
        panic!(
            "deploy/Containerfile's runtime stage must create ioc-agent with fixed ids: \
             `groupadd --system --gid G ioc-agent` and `useradd --system --uid U --gid G …`"
        )
    };
    let gid = flag(gline, "--gid")
        .expect("groupadd in deploy/Containerfile must give --gid (a fixed group id)");
    let uid = flag(uline, "--uid").expect("useradd in deploy/Containerfile must give --uid");
    assert_eq!(
        flag(uline, "--gid"),
        Some(gid),
        "useradd must put ioc-agent in its group by the fixed id: --gid {gid}"
    );
    let apt = runtime.find("apt-get install").unwrap_or(usize::MAX);
    assert!(
        runtime.find("groupadd").unwrap() < apt,
        "deploy/Containerfile creates the ioc-agent group after installing packages: a package's \
         system group can take its id first — create the user and group before `apt-get install`"
    );
    (uid, gid)
}

#[test]
fn k8s_daemonset_runs_as_the_image_user_on_a_writable_host_dir() {
    let res = all_resources();
    let ds = daemonset(&res);
    let pod = &ds["spec"]["template"]["spec"];
    let (uid, gid) = image_ids();
    let sc = &pod["securityContext"];
    assert_eq!(
        (sc["runAsUser"].as_u64(), sc["runAsGroup"].as_u64()),
        (Some(uid), Some(gid)),
        "the pod must run as the image's ioc-agent user {uid}:{gid} (deploy/Containerfile)"
    );
    assert_eq!(
        sc["runAsNonRoot"], true,
        "the pod must set runAsNonRoot: true"
    );

    // The data dir is the node's directory; the kubelet creates it root:root
    // 0755 and fsGroup does not apply to hostPath: an init step as root must
    // hand it to the agent before anything running as the agent touches it.
    let data = arr(&pod["volumes"])
        .iter()
        .find(|v| v["hostPath"].is_object())
        .expect("the data dir is a hostPath volume");
    let data_name = data["name"].as_str().unwrap();
    let inits = arr(&pod["initContainers"]);
    let first = inits.first().expect(
        "the DaemonSet needs init containers: one that makes the hostPath writable for the agent",
    );
    let mounts_data = |c: &Value| {
        arr(&c["volumeMounts"])
            .iter()
            .any(|m| m["name"] == data_name)
    };
    assert!(
        mounts_data(first) && first["securityContext"]["runAsUser"] == 0,
        "the first init container must run as root (runAsUser: 0) with the '{data_name}' hostPath mounted, \
         to chown it to {uid}:{gid}: the kubelet creates it root:root 0755 and fsGroup does not apply to hostPath"
    );
    let script = serde_json::to_string(&first["command"]).unwrap()
        + &serde_json::to_string(&first["args"]).unwrap();
    assert!(
        script.contains(&format!("chown {uid}:{gid}"))
            || script.contains(&format!("chown -h {uid}:{gid}")),
        "the first init container must `chown {uid}:{gid}` the data dir, got {script}"
    );
    let caps = &first["securityContext"]["capabilities"];
    assert_eq!(
        caps["drop"],
        serde_json::json!(["ALL"]),
        "root init: drop ALL, add back only what chown needs"
    );
    for c in arr(&caps["add"]) {
        assert!(
            ["CHOWN", "FOWNER", "DAC_READ_SEARCH"].contains(&c.as_str().unwrap()),
            "root init container adds {c}: it needs only CHOWN, FOWNER, DAC_READ_SEARCH"
        );
    }
    assert_eq!(
        first["securityContext"]["allowPrivilegeEscalation"], false,
        "the root init container must set allowPrivilegeEscalation: false"
    );
    for c in inits.iter().skip(1).chain(arr(&pod["containers"])) {
        assert!(
            c["securityContext"]["runAsUser"].is_null(),
            "{}: only the ownership init runs as another user",
            c["name"]
        );
    }
    // Everything the agent and the setup page write is under data_dir:
    // the hostPath is mounted there, writable.
    let cfg = k8s_config();
    let data_dir = cfg["data_dir"].as_str().unwrap();
    let agent = &arr(&pod["containers"])[0];
    let m = by_name(&agent["volumeMounts"], data_name).unwrap();
    assert_eq!(
        m["mountPath"], data_dir,
        "the hostPath must be mounted at data_dir"
    );
    assert!(
        m["readOnly"] != true,
        "data_dir (outbox, evidence, setup.toml) must be writable"
    );
    assert_eq!(data["hostPath"]["path"], data_dir);
}

/// deploy/k8s/agent.toml as a JSON value (parsed by the validator's Python).
fn k8s_config() -> Value {
    let path = root().join("deploy/k8s/agent.toml");
    assert!(
        path.exists(),
        "deploy/k8s/agent.toml is missing: the config the cluster's Secret ioc-agent-config holds"
    );
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, tomllib\njson.dump(tomllib.load(open(sys.argv[1], 'rb')), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every value the config names as a file, with its TOML key.
fn config_files(cfg: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let here = format!("{at}.{k}");
                    if k.ends_with("_file") {
                        out.push((here.clone(), x.as_str().unwrap().to_string()));
                    }
                    walk(x, &here, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, at, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(cfg, "", &mut out);
    out
}

#[test]
fn k8s_config_and_passwords_come_from_secrets() {
    let res = all_resources();
    for cm in find(&res, "ConfigMap") {
        let text = serde_json::to_string(&cm["data"]).unwrap().to_lowercase();
        assert!(
            !text.contains("password") && !text.contains("token") && !text.contains("rtsp://"),
            "ConfigMap {} holds credentials or camera URLs: put them in a Secret",
            cm["metadata"]["name"]
        );
    }
    let ds = daemonset(&res);
    let pod = &ds["spec"]["template"]["spec"];
    for v in arr(&pod["volumes"]) {
        assert!(
            v["configMap"].is_null(),
            "volume {} is a ConfigMap: agent.toml names cameras, users and secret files — mount it from a Secret",
            v["name"]
        );
    }
    let agent = &arr(&pod["containers"])[0];
    let args: Vec<&str> = arr(&agent["args"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("the agent's args give --config");
    let mounts = arr(&agent["volumeMounts"]);
    let secret_volume = |name: &Value| {
        arr(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == *name)
            .is_some_and(|v| v["secret"].is_object())
    };
    // The mount that holds a path: longest mountPath that is a prefix.
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| {
                let mp = m["mountPath"].as_str().unwrap();
                path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
    };
    for c in arr(&pod["initContainers"])
        .iter()
        .chain(arr(&pod["containers"]))
    {
        for m in arr(&c["volumeMounts"]) {
            assert!(
                m["subPath"].is_null(),
                "{}: volumeMount {} uses subPath: a subPath mount never sees an updated Secret or \
                 ConfigMap, so a reload finds the old file — mount the directory",
                c["name"],
                m["name"]
            );
        }
    }
    let m = mount_of(config_path).unwrap_or_else(|| panic!("no volume mounted for {config_path}"));
    assert!(
        secret_volume(&m["name"]) && m["readOnly"] == true,
        "{config_path} must come from a Secret volume, read-only (it is {m})"
    );
    // Every secret the config reads is a file on a Secret volume.
    let cfg = k8s_config();
    let files = config_files(&cfg);
    assert!(
        files.iter().any(|(k, _)| k.ends_with("password_file")),
        "deploy/k8s/agent.toml reads no password_file: passwords belong in ioc-agent-secrets"
    );
    for (key, path) in &files {
        let m = mount_of(path).unwrap_or_else(|| panic!("{key} = {path}: no volume mounted there"));
        assert!(
            secret_volume(&m["name"]),
            "{key} = {path} is on volume {}, which is not a Secret",
            m["name"]
        );
    }
    // No inline secret in the config: no `password`/`token` keys, no
    // credentials in a camera URL.
    let text = std::fs::read_to_string(root().join("deploy/k8s/agent.toml")).unwrap();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let key = line.split('=').next().unwrap().trim();
        assert!(
            !["password", "token"].contains(&key),
            "deploy/k8s/agent.toml writes a secret inline ({line}): use password_file / token_file"
        );
        if let Some(i) = line.find("://") {
            let rest = &line[i + 3..];
            let host = rest.split('/').next().unwrap();
            assert!(
                !host.contains('@'),
                "deploy/k8s/agent.toml has credentials in a URL ({line}): use username + password_file"
            );
        }
    }
    for cam in arr(&cfg["cameras"]) {
        assert!(
            cam["password_file"].is_string() || cam["password_env"].is_string(),
            "camera {} has no password_file/password_env",
            cam["id"]
        );
    }
}

#[test]
fn k8s_agent_has_a_startup_probe_before_liveness() {
    let res = all_resources();
    let ds = daemonset(&res);
    let agent = &arr(&ds["spec"]["template"]["spec"]["containers"])[0];
    let sp = &agent["startupProbe"];
    assert!(
        sp.is_object(),
        "the agent has no startupProbe: it loads its models before HTTP listens (minutes with \
         TensorRT), and the liveness probe would kill it first"
    );
    assert_eq!(
        sp["httpGet"]["path"], "/healthz",
        "startupProbe: GET /healthz (200 once HTTP serves)"
    );
    let budget =
        sp["periodSeconds"].as_u64().unwrap_or(10) * sp["failureThreshold"].as_u64().unwrap_or(3);
    assert!(
        budget >= 600,
        "startupProbe allows {budget} s: give model loading at least 600 s"
    );
    assert_eq!(
        agent["livenessProbe"]["httpGet"]["path"], "/healthz",
        "livenessProbe: /healthz"
    );
    assert_eq!(
        agent["readinessProbe"]["httpGet"]["path"], "/readyz",
        "readinessProbe: /readyz"
    );
    // The probes speak what the config serves.
    let cfg = k8s_config();
    let port: u64 = cfg["http"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let scheme = if cfg["http"]["tls_cert_file"].is_string() {
        "HTTPS"
    } else {
        "HTTP"
    };
    for p in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let g = &agent[p]["httpGet"];
        let gport = match &g["port"] {
            Value::String(n) => by_name(&agent["ports"], n).unwrap()["containerPort"].as_u64(),
            v => v.as_u64(),
        };
        assert_eq!(
            gport,
            Some(port),
            "{p} must use [http] listen's port {port}"
        );
        assert_eq!(
            g["scheme"].as_str().unwrap_or("HTTP"),
            scheme,
            "{p}: [http] serves {scheme}"
        );
    }
}

#[test]
fn k8s_metrics_are_scraped_with_the_scraper_token() {
    let res = all_resources();
    let ds = daemonset(&res);
    let text = serde_json::to_string(ds).unwrap();
    assert!(
        !text.contains("prometheus.io/"),
        "the DaemonSet carries prometheus.io/* annotations: a scrape by them sends no token and \
         /metrics answers 401 — scrape with the ServiceMonitor (bearer token from a Secret)"
    );
    let sm = find(&res, "ServiceMonitor");
    assert_eq!(
        sm.len(),
        1,
        "deploy/k8s/ needs a ServiceMonitor for /metrics"
    );
    let ep = &arr(&sm[0]["spec"]["endpoints"])[0];
    assert_eq!(
        ep["path"], "/metrics",
        "the ServiceMonitor must scrape /metrics"
    );
    let auth = &ep["authorization"];
    assert_eq!(
        auth["type"], "Bearer",
        "the ServiceMonitor sends no token (endpoints[0].authorization: type Bearer, credentials \
         from the Secret the agent's scraper user reads): /metrics answers 401 without one"
    );
    let (sname, skey) = (
        auth["credentials"]["name"]
            .as_str()
            .expect("authorization.credentials.name"),
        auth["credentials"]["key"]
            .as_str()
            .expect("authorization.credentials.key"),
    );
    // The same Secret key is the token file of the config's scraper user.
    let pod = &ds["spec"]["template"]["spec"];
    let vol = arr(&pod["volumes"])
        .iter()
        .find(|v| v["secret"]["secretName"] == sname)
        .unwrap_or_else(|| panic!("the agent does not mount Secret {sname}, so its scraper token is not the one Prometheus sends"));
    let agent = &arr(&pod["containers"])[0];
    let m = by_name(&agent["volumeMounts"], vol["name"].as_str().unwrap()).unwrap();
    let token_path = format!("{}/{skey}", m["mountPath"].as_str().unwrap());
    let cfg = k8s_config();
    let scraper = arr(&cfg["http"]["users"])
        .iter()
        .find(|u| u["role"] == "scraper")
        .expect("deploy/k8s/agent.toml needs a [[http.users]] with role = \"scraper\"");
    assert_eq!(
        scraper["token_file"], token_path,
        "the scraper user's token_file must be the Secret key the ServiceMonitor sends"
    );
    // The Service the ServiceMonitor selects has the agent's port, by name.
    let svc = find(&res, "Service");
    assert_eq!(
        svc.len(),
        1,
        "deploy/k8s/ needs one Service for the ServiceMonitor to select"
    );
    let port_name = ep["port"].as_str().unwrap();
    let sp = by_name(&svc[0]["spec"]["ports"], port_name)
        .unwrap_or_else(|| panic!("Service has no port named {port_name}"));
    let listen: u64 = cfg["http"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sp["port"].as_u64(),
        Some(listen),
        "the Service's port must be [http] listen's"
    );
    for (k, v) in sm[0]["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &svc[0]["metadata"]["labels"][k], v,
            "ServiceMonitor does not select the Service"
        );
        assert_eq!(
            &svc[0]["spec"]["selector"][k], v,
            "the Service does not select the agent's pods"
        );
    }
    if cfg["http"]["tls_cert_file"].is_string() {
        assert_eq!(
            ep["scheme"], "https",
            "[http] serves HTTPS: the ServiceMonitor must scrape https"
        );
    }
}

/// The config the cluster runs passes `check-config`, its install paths
/// mapped to this checkout and its secret files made up in a temp dir.
#[test]
fn k8s_agent_config_passes_check_config() {
    let cfg = k8s_config();
    let text = std::fs::read_to_string(root().join("deploy/k8s/agent.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut text = text
        .replace(
            "/usr/share/ioc-agent/models",
            &root().join("models").display().to_string(),
        )
        .replace(
            cfg["onnxruntime"].as_str().unwrap_or("\u{0}"),
            &ort_lib().display().to_string(),
        );
    for (_, path) in config_files(&cfg) {
        let local = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "0123456789abcdef0123456789abcdef\n").unwrap();
        text = text.replace(&format!("\"{path}\""), &format!("\"{}\"", local.display()));
    }
    let data = dir.path().join("data");
    text = text.replace(
        &format!("\"{}\"", cfg["data_dir"].as_str().unwrap()),
        &format!("\"{}\"", data.display()),
    );
    std::fs::create_dir_all(&data).unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/k8s/agent.toml fails check-config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The reload the docs promise works with the mounts (checked above: no
/// subPath, so the mounted file follows the Secret): the page says how to
/// update the Secret, how to wait for the kubelet and how to send SIGHUP,
/// and when a rollout is needed instead.
#[test]
fn k8s_reload_is_documented_as_it_works() {
    let doc = std::fs::read_to_string(root().join("docs/src/install/k3s.md")).unwrap();
    for want in [
        "kubectl -n ioc create secret generic ioc-agent-config --from-file=agent.toml=deploy/k8s/agent.toml",
        "kill -HUP 1",
        "rollout restart ds/ioc-agent",
        "setup.toml",
    ] {
        assert!(doc.contains(want), "docs/src/install/k3s.md lacks `{want}`");
    }
}
