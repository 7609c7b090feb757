//! The image recipe and the pins, read as shipped: `deploy/Containerfile`
//! copies every file the build reads and installs the build packages that
//! `deploy/bootstrap.sh` installs; base images are pinned by release (and the
//! runtime by digest); the ONNX Runtime wheel is pinned by sha256 and the
//! library in `.ort/` is the pinned one. (`cargo deny` runs from `make deny`.)

use crate::common;

use std::collections::BTreeSet;

use common::*;
use sha2::Digest;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Containerfile's instructions, comments dropped and `\` continuations joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// The instructions of the stage `FROM … AS build`.
fn build_stage() -> Vec<String> {
    let all = instructions(&read("deploy/Containerfile"));
    let start = all
        .iter()
        .position(|i| i.starts_with("FROM ") && i.ends_with(" AS build"))
        .expect("deploy/Containerfile has no `FROM … AS build` stage");
    all[start + 1..]
        .iter()
        .take_while(|i| !i.starts_with("FROM "))
        .cloned()
        .collect()
}

/// What cargo reads to build the release binary: the manifest and lockfile,
/// the build script, the library's and binary's source folders, the bench
/// sources (cargo refuses a manifest whose declared targets are missing).
#[test]
fn containerfile_copies_what_cargo_builds_from() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let mut needs = BTreeSet::from(["Cargo.toml".to_string(), "Cargo.lock".to_string()]);
    if let Some(b) = manifest["package"].get("build").and_then(|b| b.as_str()) {
        needs.insert(b.to_string());
    }
    let top = |p: &str| p.split('/').next().unwrap().to_string();
    needs.insert(top(manifest["lib"]["path"].as_str().unwrap()));
    for bin in manifest["bin"].as_array().unwrap() {
        needs.insert(top(bin["path"].as_str().unwrap()));
    }
    if manifest.contains_key("bench") {
        needs.insert("benches".into());
    }

    let mut copied = BTreeSet::new();
    for i in build_stage() {
        let Some(args) = i.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        for src in &words[..words.len() - 1] {
            copied.insert(
                src.trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
    }
    let missing: Vec<_> = needs
        .iter()
        .filter(|n| {
            !copied
                .iter()
                .any(|c| c == *n || n.starts_with(&format!("{c}/")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/Containerfile's build stage does not COPY {missing:?}, which `cargo build` reads \
         (Cargo.toml); it copies {copied:?}"
    );
}

/// Every build package of deploy/bootstrap.sh (the -dev packages build.rs and
/// the gstreamer crates link against, pkg-config, the C toolchain) is
/// installed in the image's build stage too.
#[test]
fn containerfile_build_stage_installs_the_build_packages() {
    let boot = read("deploy/bootstrap.sh");
    let list = boot
        .split_once("APT_PACKAGES=(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .expect("APT_PACKAGES=( … ) in deploy/bootstrap.sh")
        .0;
    let wanted: Vec<&str> = list
        .split_whitespace()
        .filter(|p| p.ends_with("-dev") || *p == "pkg-config" || *p == "build-essential")
        .collect();
    assert!(wanted.contains(&"libavcodec-dev"), "{wanted:?}");
    let installed: BTreeSet<String> = build_stage()
        .iter()
        .filter(|i| i.contains("apt-get install"))
        .flat_map(|i| i.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let missing: Vec<_> = wanted.iter().filter(|p| !installed.contains(**p)).collect();
    assert!(
        missing.is_empty(),
        "deploy/Containerfile's build stage does not install {missing:?}, which \
         deploy/bootstrap.sh installs to build ioc-agent: add them to its apt-get install"
    );
}

/// Base images: every FROM is a build argument (or an earlier stage) whose
/// default names a Debian release (bookworm or 12.x) and a version, never
/// `latest`; the runtime base also carries a sha256 digest.
#[test]
fn containerfile_base_images_are_pinned() {
    let all = instructions(&read("deploy/Containerfile"));
    let mut defaults = std::collections::BTreeMap::new();
    for i in &all {
        if let Some((name, value)) = i.strip_prefix("ARG ").and_then(|a| a.split_once('='))
            && name.ends_with("_IMAGE")
        {
            defaults.insert(name.to_string(), value.to_string());
        }
    }
    let mut stages = BTreeSet::new();
    let mut last = None;
    for i in all.iter().filter(|i| i.starts_with("FROM ")) {
        let words: Vec<&str> = i.split_whitespace().collect();
        let image = words[1];
        if let Some(stage) = words.iter().position(|w| *w == "AS").map(|p| words[p + 1]) {
            stages.insert(stage.to_string());
        }
        if stages.contains(image) {
            continue;
        }
        let arg = image
            .strip_prefix("${")
            .and_then(|a| a.strip_suffix('}'))
            .unwrap_or_else(|| {
                panic!("`{i}`: name the base in an ARG …_IMAGE so it can be pinned and overridden")
            });
        let value = defaults
            .get(arg)
            .unwrap_or_else(|| panic!("`{i}`: no `ARG {arg}=…` default"));
        let tag = value
            .split('@')
            .next()
            .unwrap()
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("{arg}={value}: no tag"));
        assert!(
            tag != "latest"
                && tag.chars().next().is_some_and(|c| c.is_ascii_digit())
                && (tag.contains("bookworm") || tag.starts_with("12.")),
            "{arg}={value}: pin the base by version and Debian release (e.g. debian:12.15-slim, rust:1.95.0-bookworm)"
        );
        last = Some((arg.to_string(), value.clone()));
    }
    let (arg, runtime) = last.expect("no FROM");
    let digest = runtime.split_once("@sha256:").map(|(_, d)| d);
    assert!(
        digest.is_some_and(|d| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit())),
        "{arg}={runtime}: the runtime base (what ships) is pinned by @sha256:<64 hex> digest"
    );
}

/// The ONNX Runtime wheel comes only through deploy/ort-requirements.txt
/// (sha256 hashes, pip --require-hashes), for `make` and the image alike, and
/// the library `make ort` unpacked is the one whose sha256 bootstrap.sh pins.
#[test]
fn onnx_runtime_is_pinned_by_sha256() {
    let boot = read("deploy/bootstrap.sh");
    let var = |name: &str| {
        boot.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= in deploy/bootstrap.sh"))
            .to_string()
    };
    let version = var("ORT_VERSION");
    let lib_sha = var("ORT_LIB_SHA256");
    assert_eq!(version, ioc_agent::infer::ORT_VERSION);

    let req = read("deploy/ort-requirements.txt");
    assert!(
        req.contains(&format!("onnxruntime=={version} ")),
        "ort-requirements.txt pins another version than {version}"
    );
    let hashes: Vec<&str> = req.split("--hash=sha256:").skip(1).collect();
    assert!(
        !hashes.is_empty(),
        "ort-requirements.txt has no --hash=sha256:"
    );
    for h in hashes {
        let h = h.split_whitespace().next().unwrap();
        assert!(
            h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()),
            "hash {h}"
        );
    }
    assert!(boot.contains("--require-hashes") && boot.contains("-r \"$ORT_REQUIREMENTS\""));
    assert!(
        build_stage()
            .iter()
            .any(|i| i.contains("deploy/bootstrap.sh ort")),
        "deploy/Containerfile takes ONNX Runtime another way than deploy/bootstrap.sh ort (the pinned wheel)"
    );

    let lib = ort_lib();
    let bytes = std::fs::read(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    let have = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(
        have,
        lib_sha,
        "{} is not the library of the pinned wheel: remove it and run `make ort`",
        lib.display()
    );
}
