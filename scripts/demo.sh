#!/usr/bin/env bash
# `make demo`: simulator (real footage over loopback RTSP) → ioc-agent → a
# mosquitto on a free loopback port → `ioc-agent watch` printing each alert.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ioc-agent}
DEMO=.demo
mkdir -p "$DEMO"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Footage: the shared copy, else download and verify it.
VIDEO=../shared/videos/opencv4nodejs_traffic.mp4
if [ ! -f "$VIDEO" ]; then
  VIDEO=$DEMO/opencv4nodejs_traffic.mp4
  url=$(sed -n 's/^url = "\(.*\)"/\1/p' configs/footage/opencv4nodejs_traffic.toml)
  sum=$(sed -n 's/^sha256 = "\(.*\)"/\1/p' configs/footage/opencv4nodejs_traffic.toml)
  if [ ! -f "$VIDEO" ] || ! echo "$sum  $VIDEO" | sha256sum -c --quiet 2>/dev/null; then
    echo "demo: downloading sample footage from $url"
    curl -fsSL --retry 2 -o "$VIDEO.partial" "$url"
    echo "$sum  $VIDEO.partial" | sha256sum -c --quiet || { echo "demo: $VIDEO.partial: sha256 mismatch"; exit 1; }
    mv "$VIDEO.partial" "$VIDEO"
  fi
fi

MQTT_PORT=$(free_port)
RTSP_PORT=$(free_port)
HTTP_PORT=$(free_port)
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$DEMO/mosquitto.conf"
mosquitto -c "$DEMO/mosquitto.conf" > "$DEMO/mosquitto.log" 2>&1 & pids+=($!)

"$BIN" simulate --listen "127.0.0.1:$RTSP_PORT" --stream "traffic=$VIDEO" > "$DEMO/simulate.log" 2>&1 & pids+=($!)

# The demo config with this run's ports.
sed -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$MQTT_PORT#" \
    -e "s#rtsp://127.0.0.1:8554/#rtsp://127.0.0.1:$RTSP_PORT/#" \
    -e "s#127.0.0.1:8080#127.0.0.1:$HTTP_PORT#" configs/demo.toml > "$DEMO/demo.toml"
"$BIN" check-config "$DEMO/demo.toml" >/dev/null

for _ in $(seq 50); do
  grep -q "serving rtsp" "$DEMO/simulate.log" 2>/dev/null && break
  sleep 0.2
done

echo "demo: camera rtsp://127.0.0.1:$RTSP_PORT/traffic, broker mqtt://127.0.0.1:$MQTT_PORT"
echo "demo: review page http://127.0.0.1:$HTTP_PORT/review (token: demo-review-token-not-secret)"
echo "demo: evidence folders in data/evidence; check one with: $BIN verify --config $DEMO/demo.toml data/evidence/<event id>"
echo "demo: agent log in $DEMO/agent.log; alerts below (Ctrl-C to stop)"
"$BIN" watch --url "mqtt://127.0.0.1:$MQTT_PORT" & pids+=($!)
sleep 0.5
"$BIN" run --config "$DEMO/demo.toml" > "$DEMO/agent.log" 2>&1 & pids+=($!)
wait -n "${pids[@]}" || true
echo "demo: a process exited early; see $DEMO/*.log"
exit 1
