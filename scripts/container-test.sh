#!/usr/bin/env bash
# The container image built from deploy/Containerfile and run as shipped
# (issue #14, test 2).
#
#   scripts/container-test.sh          (make container-test; make test runs it)
#
# 1. Base images from Debian's packages (no image registry is reachable from
#    the machines this is tested on): a debootstrap minbase bookworm root
#    imported as localhost/ioc-edge-base/debian:12, and on it this host's
#    Rust toolchain (the version the Containerfile's BUILD_IMAGE names) as
#    localhost/ioc-edge-base/rust:VERSION-bookworm. Both stay in podman's
#    storage; later runs reuse them. They go in through the Containerfile's
#    own build arguments, BUILD_IMAGE and RUNTIME_IMAGE: nothing else of
#    the file is changed.
# 2. `podman build -f deploy/Containerfile .` (cargo's registry and target
#    are cache mounts: a second build is incremental).
# 3. The image run the way the Containerfile's header says: --read-only with
#    a tmpfs /tmp, the config directory mounted read-only (root:999 0640, as
#    a host would hold it), the state directory owned by 999, host network;
#    the models pulled into the state directory by the image's own
#    `models pull --mirror`. A camera simulated on the host and a mosquitto
#    on the host. Checks: it runs as 999:999, its root is read-only, an
#    alert arrives, `podman stop` ends it with exit status 0 and the offline
#    status.
#
# Uses runc: crun fails on hosts with hybrid cgroups (this machine class).
# Skips (exit 0, "SKIP" on stderr) when not root, when podman is missing
# (`make setup` installs it) or cannot run a container here, or with
# IOC_CONTAINER_TEST=skip; IOC_CONTAINER_TEST=require turns skips into
# failures. KEEP=1 keeps the run's directory and container.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
CACHE=${IOC_CONTAINER_TEST_CACHE:-/var/cache/ioc-edge/container-test}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MODEL_MIRROR=${MODEL_MIRROR:-$ROOT_DIR/../shared/models}
[ -d "$MODEL_MIRROR" ] || MODEL_MIRROR=$ROOT_DIR/data/models
VIDEO=${VIDEO:-$ROOT_DIR/../shared/videos/opencv4nodejs_traffic.mp4}
AGENT_ID=container-test
ALERT_TIMEOUT=${ALERT_TIMEOUT:-120}
RUNTIME=${IOC_CONTAINER_RUNTIME:-runc}
IMAGE=localhost/ioc-agent:container-test
BASE_IMAGE=localhost/ioc-edge-base/debian:12

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "container-test: $*"; }
fail() { echo "container-test: FAIL: $*" >&2; exit 1; }
skip() {
  if [ "${IOC_CONTAINER_TEST:-}" = require ]; then
    fail "(IOC_CONTAINER_TEST=require) $*"
  fi
  echo "container-test: SKIP: $*" >&2
  exit 0
}
T0=$(now)

[ "${IOC_CONTAINER_TEST:-}" = skip ] && skip "IOC_CONTAINER_TEST=skip"
[ "$(id -u)" = 0 ] || skip "needs root (podman's storage and runc as root); run as root"
for c in podman "$RUNTIME" debootstrap mosquitto mosquitto_sub python3 rustc; do
  command -v "$c" >/dev/null || skip "$c not found; \`make setup\` installs it (deploy/bootstrap.sh system)"
done
[ -f "$VIDEO" ] || fail "footage $VIDEO not found (set VIDEO=)"
[ -f "$MODEL_MIRROR/yolox_nano.onnx" ] || fail "no model files in $MODEL_MIRROR (make models, or set MODEL_MIRROR=)"

mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
LOGS=$RUN/logs
mkdir -p "$LOGS"
NAME=ioc-container-test-$$
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-}" != 1 ]; then
    podman rm -f "$NAME" "$NAME-camera" >/dev/null 2>&1 || true
    [ $rc = 0 ] && rm -rf "$RUN"
  fi
  [ $rc = 0 ] || echo "container-test: logs in $LOGS" >&2
  exit $rc
}
trap cleanup EXIT
# runc refuses podman's default rlimits on hosts whose own hard limits are
# lower (this machine class: "error setting rlimit type 7"): ask for what
# the host allows.
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
{ [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 4096 ]; } && NPROC=4096
ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")
P() { podman --runtime "$RUNTIME" "$@"; }
Prun() { local verb=$1; shift; P "$verb" "${ULIMITS[@]}" "$@"; }

# The runtime base, made once from Debian's packages.
if ! podman image exists "$BASE_IMAGE"; then
  exec 9>"$CACHE/lock"
  flock 9
  if ! podman image exists "$BASE_IMAGE"; then
    say "making $BASE_IMAGE from Debian's packages (debootstrap minbase $SUITE; kept in podman's storage)"
    t=$(now)
    root=$CACHE/debian-root.partial
    rm -rf "$root"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" > "$LOGS/debootstrap.txt" 2>&1 \
      || { tail -n 20 "$LOGS/debootstrap.txt" >&2; fail "debootstrap $SUITE from $MIRROR failed (log: $LOGS/debootstrap.txt)"; }
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
      "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" > "$root/etc/apt/sources.list"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # The host's own certificate authorities (a site's TLS-inspecting proxy,
    # as on the machines this is tested on): the build stage fetches the ONNX
    # Runtime wheel and the crates over HTTPS, and Debian's ca-certificates,
    # installed there, takes these in as it would on the host.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
      mkdir -p "$root/usr/local/share/ca-certificates"
      cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
      say "the host's local certificate authorities go into the base: $(cd /usr/local/share/ca-certificates && ls ./*.crt | tr '\n' ' ')"
    fi
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" > "$LOGS/import.txt" 2>&1 \
      || fail "podman import of the Debian root failed: $(tail -n 5 "$LOGS/import.txt")"
    rm -rf "$root"
    say "base image: $(secs "$t" "$(now)") s"
  fi
  flock -u 9
fi
# Can podman run a container here at all? (namespaces, cgroups, rlimits)
Prun run --rm --network none "$BASE_IMAGE" /bin/true > "$LOGS/probe.txt" 2>&1 \
  || skip "podman cannot run a container here with $RUNTIME: $(tail -n 3 "$LOGS/probe.txt" | tr '\n' ' ')"

# The build image: the Rust release BUILD_IMAGE names, from this host's toolchain.
WANT_RUST=$(sed -n 's|^ARG BUILD_IMAGE=.*rust:\([0-9.]*\)-bookworm.*|\1|p' deploy/Containerfile)
[ -n "$WANT_RUST" ] || fail "cannot read the Rust version from BUILD_IMAGE in deploy/Containerfile"
if [ "$(rustc --version | cut -d' ' -f2)" = "$WANT_RUST" ]; then
  SYSROOT=$(rustc --print sysroot)
else
  SYSROOT=$(rustup run "$WANT_RUST" rustc --print sysroot 2>/dev/null || true)
fi
[ -n "$SYSROOT" ] && [ -x "$SYSROOT/bin/cargo" ] \
  || fail "Rust $WANT_RUST (deploy/Containerfile's BUILD_IMAGE) is not installed here: rustup toolchain install $WANT_RUST"
RUST_IMAGE=localhost/ioc-edge-base/rust:$WANT_RUST-bookworm
if ! podman image exists "$RUST_IMAGE"; then
  say "making $RUST_IMAGE: $BASE_IMAGE with this host's Rust $WANT_RUST"
  t=$(now)
  ctx=$RUN/rust-image
  mkdir -p "$ctx"
  cp -a "$SYSROOT" "$ctx/rust"
  rm -rf "$ctx/rust/share/doc"
  cat > "$ctx/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY rust /usr/local/rust
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
EOF
  Prun build --isolation chroot -t "$RUST_IMAGE" "$ctx" > "$LOGS/rust-image.txt" 2>&1 \
    || { tail -n 20 "$LOGS/rust-image.txt" >&2; fail "building $RUST_IMAGE failed (log: $LOGS/rust-image.txt)"; }
  rm -rf "$ctx"
  say "build image: $(secs "$t" "$(now)") s"
fi

# --- the image, from deploy/Containerfile as shipped -----------------------------------
say "podman build -f deploy/Containerfile (BUILD_IMAGE=$RUST_IMAGE RUNTIME_IMAGE=$BASE_IMAGE)"
T_BUILD=$(now)
Prun build --isolation chroot -f deploy/Containerfile \
  --build-arg BUILD_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  -t "$IMAGE" . > "$LOGS/build.txt" 2>&1 \
  || {
    tail -n 30 "$LOGS/build.txt" >&2
    # The build fetches Debian packages, the ONNX Runtime wheel and the crates:
    # on a machine that reaches none of them that is the host, not the file.
    if grep -qE "Temporary failure resolving|Could not resolve|Network is unreachable|Failed to establish a new connection|failed to download from|Couldn't resolve host" "$LOGS/build.txt"; then
      skip "podman build could not reach deb.debian.org, PyPI or crates.io (log: $LOGS/build.txt)"
    fi
    fail "podman build -f deploy/Containerfile failed (log: $LOGS/build.txt)"
  }
T_BUILT=$(now)
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "image built in $(secs "$T_BUILD" "$T_BUILT") s, $((SIZE / 1000000)) MB"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = ioc-agent ] \
  || fail "the image does not run as the ioc-agent user (Config.User = $(podman image inspect --format '{{.Config.User}}' "$IMAGE"))"

# --- host side: broker and camera ------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port); RTSP_PORT=$(free_port); HTTP_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$RUN/mosquitto.conf"
mosquitto -c "$RUN/mosquitto.conf" > "$LOGS/mosquitto.txt" 2>&1 & pids+=($!)
# The camera is served by the image's own binary, on the host network.
Prun run --rm --name "$NAME-camera" --network host --read-only --tmpfs /tmp \
  -v "$(readlink -f "$VIDEO")":/footage/traffic.mp4:ro --entrypoint ioc-agent "$IMAGE" \
  simulate --listen "127.0.0.1:$RTSP_PORT" --stream traffic=/footage/traffic.mp4 \
  > "$LOGS/simulate.txt" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q "serving rtsp" "$LOGS/simulate.txt" 2>/dev/null && break; sleep 0.2; done
grep -q "serving rtsp" "$LOGS/simulate.txt" || fail "the simulated camera did not start (log: $LOGS/simulate.txt)"
for _ in $(seq 50); do (: < "/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -v -F '%U %t %p' \
  -t "ioc/v1/$AGENT_ID/status" -t "ioc/v1/$AGENT_ID/events" > "$LOGS/mqtt.txt" 2>&1 & pids+=($!)

# --- config and state, as a host holds them --------------------------------------------
ETC=$RUN/etc
DATA=$RUN/data
mkdir -p "$ETC/secrets" "$DATA"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$ETC/secrets/http-token"
cat > "$ETC/agent.toml" <<EOF
# container-test: written by scripts/container-test.sh
agent_id = "$AGENT_ID"
data_dir = "/var/lib/ioc-agent"
manifest_dir = "/usr/share/ioc-agent/models"
log = "info"

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
topic_prefix = "ioc/v1"
status_interval_secs = 10

[[models]]
name = "yolox_nano"
intra_threads = 1

[evidence]
pre_secs = 2.0
post_secs = 2.0
max_bytes = 1073741824
min_free_bytes = 1073741824

[http]
listen = "127.0.0.1:$HTTP_PORT"
token_file = "/etc/ioc-agent/secrets/http-token"

[[cameras]]
id = "traffic"
url = "rtsp://127.0.0.1:$RTSP_PORT/traffic"
detect_fps = 5
model = "yolox_nano"

[[cameras.zones]]
name = "near_lanes"
polygon = [[0.30, 0.45], [0.75, 0.45], [0.75, 1.0], [0.30, 1.0]]

[[cameras.rules]]
name = "vehicle in near lanes"
kind = "zone_enter"
zone = "near_lanes"
classes = ["car", "bus", "truck", "motorcycle"]
EOF
chown -R 0:999 "$ETC"
chmod 0750 "$ETC" "$ETC/secrets"
chmod 0640 "$ETC/agent.toml" "$ETC/secrets/http-token"
chown 999:999 "$DATA"
chmod 0750 "$DATA"
RUN_ARGS=(--read-only --tmpfs /tmp --network host
  -v "$ETC":/etc/ioc-agent:ro -v "$DATA":/var/lib/ioc-agent)

# Models into the state directory, by the image's own binary as its user.
Prun run --rm "${RUN_ARGS[@]}" -v "$(readlink -f "$MODEL_MIRROR")":/mirror:ro "$IMAGE" \
  models pull --config /etc/ioc-agent/agent.toml --mirror /mirror > "$LOGS/models-pull.txt" 2>&1 \
  || { cat "$LOGS/models-pull.txt" >&2; fail "models pull in the container failed (log: $LOGS/models-pull.txt)"; }
Prun run --rm "${RUN_ARGS[@]}" "$IMAGE" check-config /etc/ioc-agent/agent.toml > "$LOGS/check-config.txt" 2>&1 \
  || { cat "$LOGS/check-config.txt" >&2; fail "check-config in the container refused the config (log: $LOGS/check-config.txt)"; }

# --- run as shipped ----------------------------------------------------------------------
T_START=$(now)
Prun run -d --name "$NAME" "${RUN_ARGS[@]}" "$IMAGE" > "$LOGS/run.txt" 2>&1 \
  || fail "podman run failed: $(cat "$LOGS/run.txt")"
alert=
for _ in $(seq $((ALERT_TIMEOUT * 5))); do
  alert=$(grep -m1 " ioc/v1/$AGENT_ID/events " "$LOGS/mqtt.txt" || true)
  [ -n "$alert" ] && break
  [ "$(podman inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ] \
    || { podman logs "$NAME" > "$LOGS/agent.txt" 2>&1; tail -n 30 "$LOGS/agent.txt" >&2; fail "the agent's container stopped (log: $LOGS/agent.txt)"; }
  sleep 0.2
done
T_ALERT=$(now)
podman logs "$NAME" > "$LOGS/agent.txt" 2>&1 || true
[ -n "$alert" ] || { tail -n 30 "$LOGS/agent.txt" >&2; fail "no alert within ${ALERT_TIMEOUT} s (logs: $LOGS/agent.txt, $LOGS/mqtt.txt)"; }
say "start to first alert: $(secs "$T_START" "$T_ALERT") s"

ids=$(podman exec "$NAME" id -u):$(podman exec "$NAME" id -g)
[ "$ids" = 999:999 ] || fail "the agent runs as $ids, not 999:999"
podman exec "$NAME" sh -c 'touch /usr/bin/x' > /dev/null 2>&1 && fail "the container's root file system is writable"
podman exec "$NAME" sh -c 'touch /etc/ioc-agent/x' > /dev/null 2>&1 && fail "the config directory is writable from the container"
[ -n "$(find "$DATA" -name 'agent.db' -user 999)" ] || fail "the outbox was not written to the state directory as 999"

# Evidence: a sealed folder in the state directory, verified with the agent's key.
sealed=
for _ in $(seq 100); do
  sealed=$(find "$DATA/evidence" -name manifest.json 2>/dev/null | head -n1)
  [ -n "$sealed" ] && break
  sleep 0.2
done
[ -n "$sealed" ] || fail "no sealed evidence folder in the state directory"
Prun run --rm "${RUN_ARGS[@]}" "$IMAGE" verify --config /etc/ioc-agent/agent.toml \
  "/var/lib/ioc-agent/$(dirname "${sealed#"$DATA"/}")" > "$LOGS/verify.txt" 2>&1 \
  || { cat "$LOGS/verify.txt" >&2; fail "the evidence made in the container does not verify (log: $LOGS/verify.txt)"; }

T_STOP=$(now)
podman stop -t 30 "$NAME" > /dev/null
rc=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
podman logs "$NAME" > "$LOGS/agent.txt" 2>&1 || true
[ "$rc" = 0 ] || { tail -n 20 "$LOGS/agent.txt" >&2; fail "podman stop: the agent exited with status $rc"; }
for _ in $(seq 25); do grep -q "ioc/v1/$AGENT_ID/status .*\"offline\"" "$LOGS/mqtt.txt" && break; sleep 0.2; done
grep -q "ioc/v1/$AGENT_ID/status .*\"offline\"" "$LOGS/mqtt.txt" || fail "no offline status after podman stop"
grep -qi "panicked" "$LOGS/agent.txt" && fail "the agent's log shows a panic (log: $LOGS/agent.txt)"
say "stopped cleanly in $(secs "$T_STOP" "$(now)") s"
say "PASS: image $((SIZE / 1000000)) MB built in $(secs "$T_BUILD" "$T_BUILT") s; read-only, 999:999; first alert $(secs "$T_START" "$T_ALERT") s after start; whole test $(secs "$T0" "$(now)") s"
