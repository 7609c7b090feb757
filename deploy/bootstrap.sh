#!/usr/bin/env bash
# Brings a Debian 12 box to a state where `ioc-agent` builds, tests and runs.
# Idempotent: every step checks before it acts.
#   deploy/bootstrap.sh system   apt packages (GStreamer set, mosquitto, Chromium for the
#                                review-page test, debootstrap and systemd-nspawn for the
#                                booted-package test, podman, buildah and runc for the
#                                container test); retried once
#   deploy/bootstrap.sh ort      ONNX Runtime shared library into .ort/ (from the PyPI wheel,
#                                pinned by sha256 in deploy/ort-requirements.txt)
#   deploy/bootstrap.sh k8s      the Kubernetes schema validator (kubernetes-validate, from
#                                PyPI, pinned by sha256 in deploy/k8s-validate-requirements.txt)
#                                into a venv in .tools/k8s-validate, for tests/it/k8s.rs
#   deploy/bootstrap.sh all      all three
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_DIR=${ORT_DIR:-$PWD/.ort}
ORT_LIB="$ORT_DIR/lib/libonnxruntime.so.$ORT_VERSION"
# The wheel's hashes are in deploy/ort-requirements.txt (pip refuses any other wheel);
# this is the library inside it, the same in every CPython build of the wheel.
ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ORT_REQUIREMENTS=deploy/ort-requirements.txt
K8S_VENV=${K8S_VENV:-$PWD/.tools/k8s-validate}
K8S_REQUIREMENTS=deploy/k8s-validate-requirements.txt

APT_PACKAGES=(
  pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  gstreamer1.0-plugins-base-apps libgstrtspserver-1.0-dev libavcodec-dev libavutil-dev
  mosquitto mosquitto-clients nats-server python3 python3-pip python3-venv unzip curl ca-certificates build-essential
  chromium chromium-driver
  debootstrap systemd-container
  podman buildah runc
)

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

system() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node for the contract validators: Debian's nodejs and npm, unless a Node
  # with npm is already there (e.g. NodeSource's nodejs, which bundles npm and
  # conflicts with Debian's npm package).
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "bootstrap: system packages present"
    return
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_ apt-get update -q || { sleep 3; sudo_ apt-get update -q; }
  # The first install of a large set can fail with "cannot access archive": retry once.
  sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || { sleep 3; sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  # The distribution's mosquitto and NATS services are not needed: tests and
  # the demo start their own brokers (NATS: an MQTT 3.1.1-only broker).
  for svc in mosquitto nats-server; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
      sudo_ systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
}

ort() {
  if [ -f "$ORT_LIB" ]; then
    local have; have=$(sha256sum "$ORT_LIB" | cut -d' ' -f1)
    if [ "$have" = "$ORT_LIB_SHA256" ]; then
      echo "bootstrap: ONNX Runtime $ORT_VERSION present at $ORT_LIB (sha256 verified)"
      return
    fi
    echo "bootstrap: $ORT_LIB has sha256 $have, expected $ORT_LIB_SHA256: fetching it again"
  fi
  echo "bootstrap: fetching ONNX Runtime $ORT_VERSION (PyPI wheel pinned by sha256 in $ORT_REQUIREMENTS)"
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local pip=(python3 -m pip download --quiet --require-hashes --no-deps --only-binary=:all:
             --dest "$tmp" -r "$ORT_REQUIREMENTS")
  "${pip[@]}" || { sleep 3; "${pip[@]}"; } || {
    echo "bootstrap: could not fetch a wheel matching $ORT_REQUIREMENTS (a hash mismatch above" \
         "means PyPI served a different file: do not edit the hash without checking why)" >&2
    exit 1
  }
  local whl; whl=$(ls "$tmp"/onnxruntime-*.whl | head -n1)
  mkdir -p "$ORT_DIR/lib"
  unzip -q -o -j "$whl" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$tmp/lib"
  local got; got=$(sha256sum "$tmp/lib/libonnxruntime.so.$ORT_VERSION" | cut -d' ' -f1)
  if [ "$got" != "$ORT_LIB_SHA256" ]; then
    echo "bootstrap: libonnxruntime.so.$ORT_VERSION in $(basename "$whl") has sha256 $got," \
         "expected $ORT_LIB_SHA256 (ORT_LIB_SHA256 in deploy/bootstrap.sh)" >&2
    exit 1
  fi
  mv "$tmp/lib/libonnxruntime.so.$ORT_VERSION" "$ORT_LIB.partial"
  mv "$ORT_LIB.partial" "$ORT_LIB"
  echo "bootstrap: ONNX Runtime installed at $ORT_LIB"
}

# A venv holding exactly deploy/k8s-validate-requirements.txt; made again when
# that file changes (its sha256 is kept in the venv).
k8s() {
  local want; want=$(sha256sum "$K8S_REQUIREMENTS" | cut -d' ' -f1)
  if [ -x "$K8S_VENV/bin/python" ] && [ "$(cat "$K8S_VENV/.requirements.sha256" 2>/dev/null)" = "$want" ] \
     && "$K8S_VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    echo "bootstrap: kubernetes-validate present in $K8S_VENV"
    return
  fi
  echo "bootstrap: installing kubernetes-validate into $K8S_VENV (pinned by sha256 in $K8S_REQUIREMENTS)"
  rm -rf "$K8S_VENV"
  python3 -m venv "$K8S_VENV" || {
    echo "bootstrap: python3 -m venv failed: install python3-venv (deploy/bootstrap.sh system)" >&2
    exit 1
  }
  local pip=("$K8S_VENV/bin/python" -m pip install --quiet --disable-pip-version-check
             --require-hashes --no-deps --only-binary=:all: -r "$K8S_REQUIREMENTS")
  "${pip[@]}" || { sleep 3; "${pip[@]}"; } || {
    echo "bootstrap: could not install $K8S_REQUIREMENTS (a hash mismatch above means PyPI" \
         "served a different file: do not edit the hash without checking why)" >&2
    rm -rf "$K8S_VENV"
    exit 1
  }
  echo "$want" > "$K8S_VENV/.requirements.sha256"
  echo "bootstrap: kubernetes-validate installed in $K8S_VENV"
}

# The contract validators (Ajv strict, the AsyncAPI parser) at the versions
# tests/contract/package-lock.json pins, into .tools/contract; installed again
# when the lock file changes. Install scripts are not run.
CONTRACT_DIR=${CONTRACT_DIR:-$PWD/.tools/contract}
contract() {
  local want; want=$(sha256sum tests/contract/package-lock.json | cut -d' ' -f1)
  if [ -d "$CONTRACT_DIR/node_modules/@asyncapi/parser" ] \
     && [ "$(cat "$CONTRACT_DIR/.lock.sha256" 2>/dev/null)" = "$want" ]; then
    echo "bootstrap: contract validators present in $CONTRACT_DIR"
    return
  fi
  command -v npm >/dev/null || { echo "bootstrap: npm not found (deploy/bootstrap.sh system installs it)" >&2; exit 1; }
  echo "bootstrap: installing the contract validators (tests/contract/package-lock.json) into $CONTRACT_DIR"
  rm -rf "$CONTRACT_DIR"; mkdir -p "$CONTRACT_DIR"
  cp tests/contract/package.json tests/contract/package-lock.json "$CONTRACT_DIR/"
  local npm=(npm ci --prefix "$CONTRACT_DIR" --ignore-scripts --no-audit --no-fund --loglevel=error)
  "${npm[@]}" || { sleep 3; "${npm[@]}"; } || { echo "bootstrap: npm ci failed for $CONTRACT_DIR" >&2; exit 1; }
  echo "$want" > "$CONTRACT_DIR/.lock.sha256"
}

case "${1:-all}" in
  system) system ;;
  ort) ort ;;
  k8s) k8s ;;
  contract) contract ;;
  all) system; ort; k8s; contract ;;
  *) echo "usage: $0 [system|ort|k8s|contract|all]" >&2; exit 2 ;;
esac
