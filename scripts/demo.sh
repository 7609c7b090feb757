#!/usr/bin/env bash
# `make demo`: three simulated cameras (real footage over loopback RTSP) → ioc-agent
# → a mosquitto on a free loopback port → `ioc-agent watch --verify` printing each
# violation and public-order event as it arrives (Vietnamese and English), then
# its evidence folder checked against the agent's key. A simulated traffic
# controller publishes signed red / green for the junction camera's red-light rule.
# Ctrl-C stops everything this script started.
#
# Environment (for tests; the defaults are what `make demo` uses):
#   BIN          the agent binary (default target/release/ioc-agent)
#   DEMO_DIR     scratch folder: config, logs, the mirrored clip (default .demo)
#   DEMO_DATA    the agent's data_dir: outbox, evidence (default data)
#   DEMO_MODELS  verified model files (default data/models, filled by make)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ioc-agent}
DEMO=${DEMO_DIR:-.demo}
DATA=${DEMO_DATA:-$PWD/data}
MODELS=${DEMO_MODELS:-$PWD/data/models}
mkdir -p "$DEMO" "$DATA"
DEMO=$(cd "$DEMO" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Footage: the shared copy, else download it and check its sha256 (configs/footage/NAME.toml).
footage() {
  local name=$1 shared=../shared/videos/$1.mp4 local=$DEMO/$1.mp4 url sum
  if [ -f "$shared" ]; then echo "$shared"; return; fi
  url=$(sed -n 's/^url = "\(.*\)"/\1/p' "configs/footage/$name.toml")
  sum=$(sed -n 's/^sha256 = "\(.*\)"/\1/p' "configs/footage/$name.toml")
  if [ ! -f "$local" ] || ! echo "$sum  $local" | sha256sum -c --quiet 2>/dev/null; then
    echo "demo: downloading sample footage from $url" >&2
    curl -fsSL --retry 2 -o "$local.partial" "$url"
    echo "$sum  $local.partial" | sha256sum -c --quiet || { echo "demo: $local.partial: sha256 mismatch" >&2; exit 1; }
    mv "$local.partial" "$local"
  fi
  echo "$local"
}
TRAFFIC=$(footage opencv4nodejs_traffic)
PEOPLE=$(footage opencv4nodejs_people)

# The wrong-way camera: the traffic clip mirrored left to right, so the near
# lanes drive against their lawful direction (made once, a few seconds).
MIRRORED=$DEMO/traffic-flipped.mp4
if [ ! -s "$MIRRORED" ] || [ "$MIRRORED" -ot "$TRAFFIC" ]; then
  echo "demo: making the mirrored clip for the wrong-way camera"
  gst-launch-1.0 -q filesrc location="$TRAFFIC" ! qtdemux ! h264parse ! avdec_h264 \
    ! videoflip video-direction=horiz ! videoconvert \
    ! x264enc speed-preset=ultrafast key-int-max=24 bitrate=1500 ! h264parse \
    ! mp4mux ! filesink location="$MIRRORED.partial" > "$DEMO/mirror.log" 2>&1 \
    || { echo "demo: making $MIRRORED failed; see $DEMO/mirror.log"; exit 1; }
  mv "$MIRRORED.partial" "$MIRRORED"
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

"$BIN" simulate --listen "127.0.0.1:$RTSP_PORT" --stream "traffic=$TRAFFIC" \
  --stream "mirrored=$MIRRORED" --stream "people=$PEOPLE" > "$DEMO/simulate.log" 2>&1 & pids+=($!)

# The controller's key pair: the private half signs the states below, the
# public half goes to the junction camera's [cameras.signal].
SIGNAL_TOPIC=demo/junction-1/signal
[ -s "$DEMO/controller.key" ] || rm -f "$DEMO/controller.key"
if [ ! -s "$DEMO/controller.pub" ] || [ ! -s "$DEMO/controller.key" ]; then
  "$BIN" signal keygen --out "$DEMO/controller.key" 2>/dev/null > "$DEMO/controller.pub"
fi

# The demo config with this run's ports, folders and controller key.
sed -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$MQTT_PORT#" \
    -e "s#rtsp://127.0.0.1:8554/#rtsp://127.0.0.1:$RTSP_PORT/#" \
    -e "s#127.0.0.1:8080#127.0.0.1:$HTTP_PORT#" \
    -e "s#^data_dir = .*#data_dir = \"$DATA\"#" \
    -e "s#^manifest_dir = .*#manifest_dir = \"$PWD/models\"\nmodel_dir = \"$MODELS\"#" \
    -e "s#^topic = \"$SIGNAL_TOPIC\"#&\ncontroller_key_file = \"controller.pub\"#" \
    configs/demo.toml > "$DEMO/demo.toml"
"$BIN" check-config "$DEMO/demo.toml" >/dev/null

for _ in $(seq 50); do
  grep -q "serving rtsp" "$DEMO/simulate.log" 2>/dev/null && break
  sleep 0.2
done
for _ in $(seq 50); do
  mosquitto_pub -p "$MQTT_PORT" -t demo/hello -m hi 2>/dev/null && break
  sleep 0.1
done

# The simulated controller: red for 20 s, green for 10 s, signed, every 2 s.
controller() {
  local state=red last= t=0
  while true; do
    if [ "$t" -lt 20 ]; then state=red; else state=green; fi
    if [ "$state" != "$last" ]; then
      echo "SIGNAL junction-1 $state (controller, signed)"; last=$state
    fi
    mosquitto_pub -p "$MQTT_PORT" -t "$SIGNAL_TOPIC" -q 1 \
      -m "$("$BIN" signal sign --key "$DEMO/controller.key" --topic "$SIGNAL_TOPIC" --controller demo-junction-1 "$state")" \
      2>>"$DEMO/controller.log" || true
    sleep 2
    t=$(( (t + 2) % 30 ))
  done
}
controller & pids+=($!)

echo "demo: cameras rtsp://127.0.0.1:$RTSP_PORT/{traffic,mirrored,people}, broker mqtt://127.0.0.1:$MQTT_PORT"
echo "demo: review page http://127.0.0.1:$HTTP_PORT/review (token: demo-review-token-not-secret)"
echo "demo: evidence folders in $DATA/evidence; check one with: $BIN verify --config $DEMO/demo.toml $DATA/evidence/<event id>"
echo "demo: agent log in $DEMO/agent.log; events below, each followed by its evidence check (Ctrl-C to stop)"
"$BIN" watch --config "$DEMO/demo.toml" --verify & pids+=($!)
sleep 0.5
"$BIN" run --config "$DEMO/demo.toml" > "$DEMO/agent.log" 2>&1 & pids+=($!)
wait -n "${pids[@]}" || true
echo "demo: a process exited early; see $DEMO/*.log"
exit 1
