//! Deployment files: the systemd unit passes `systemd-analyze verify` and
//! keeps its sandbox; the production example config is valid once its
//! install paths exist.

use crate::common;

use std::process::Command;

use common::*;

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("deploy/ioc-agent.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=ioc-agent",
        "LimitNOFILE=65536",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    // The unit names /usr/bin/ioc-agent; verify it against the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ioc-agent.service");
    std::fs::write(&path, unit.replace("/usr/bin/ioc-agent", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("ioc-agent.service:"),
        "{err}"
    );
}

/// The sandbox the booted test (scripts/systemd-test.sh) proved the agent
/// runs under stays in the unit: exposure at most 1.5 as `systemd-analyze
/// security` scores it (1.2 today, 4.1 before the hardening of issue #15).
#[test]
fn systemd_unit_exposure() {
    let path = root().join("deploy/ioc-agent.service");
    let unit = std::fs::read_to_string(&path).unwrap();
    for want in [
        "PrivateDevices=yes",
        "PrivateUsers=yes",
        "ProtectProc=invisible",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryMax=",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=15", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 1.5:\n{}",
        text.lines()
            .filter(|l| l.starts_with('✗') || l.contains("Overall"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The signer's unit: verifies, runs as its own user with the agent's group
/// (the socket's), no network at all, and scores at most 1.0.
#[test]
fn signer_unit_verifies_and_is_locked_down() {
    let unit = std::fs::read_to_string(root().join("deploy/ioc-agent-signer.service")).unwrap();
    for want in [
        "User=ioc-signer",
        "Group=ioc-agent",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "StateDirectoryMode=0700",
        "--socket /run/ioc-signer/signer.sock",
    ] {
        assert!(unit.contains(want), "signer unit lacks {want}");
    }
    let agent = std::fs::read_to_string(root().join("deploy/ioc-agent.service")).unwrap();
    assert!(agent.contains("Wants=ioc-agent-signer.service"));
    let shipped = std::fs::read_to_string(root().join("deploy/agent.toml")).unwrap();
    assert!(shipped.contains("signer_socket = \"/run/ioc-signer/signer.sock\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ioc-agent-signer.service");
    std::fs::write(&path, unit.replace("/usr/bin/ioc-agent", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("ioc-agent-signer.service:"),
        "{err}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=10", "--no-pager"])
        .arg(root().join("deploy/ioc-agent-signer.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "{}",
        text.lines().find(|l| l.contains("Overall")).unwrap_or("")
    );
    assert!(out.status.success(), "signer exposure above 1.0:\n{text}");
}

#[test]
fn production_example_config_is_valid() {
    let text = std::fs::read_to_string(root().join("deploy/agent.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        text.replace(
            "/usr/share/ioc-agent/models",
            &root().join("models").display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
