#!/usr/bin/env bash
# A 3-node NATS cluster with JetStream and MQTT, on loopback only — the IOC
# broker the province load run (`scripts/province-load.sh`) and its short
# version in `make test` use.
#
#   scripts/nats-cluster.sh start DIR   configs, data and pid files in DIR;
#                                       free ports are chosen and written to
#                                       DIR/env (MQTT1..3, NATS1..3, MON1..3)
#   scripts/nats-cluster.sh node DIR N  (re)starts node N (1..3) alone
#   scripts/nats-cluster.sh stop DIR    stops every node
#
# Each node: client port (NATS), MQTT port, cluster route port, monitoring
# port; JetStream file storage under DIR/nN. Streams made by the IOC (and
# NATS's own MQTT session and message streams) are replicated on all three.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|node|stop DIR [N]" >&2; exit 2; }
command -v nats-server >/dev/null || {
  echo "nats-server not found: apt-get install nats-server (deploy/bootstrap.sh system does it)" >&2; exit 2; }

free_ports() {
  python3 -c 'import socket
ss=[socket.socket() for _ in range(int(__import__("sys").argv[1]))]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

start_node() {
  local n=$1
  # shellcheck disable=SC1091
  . "$dir/env"
  nats-server -c "$dir/n$n.conf" >>"$dir/n$n.log" 2>&1 &
  local v="MQTT$n"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${!v}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "node $n did not open its MQTT port ${!v}; see $dir/n$n.log" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  read -r -a p <<<"$(free_ports 12)"
  : >"$dir/env"
  for n in 1 2 3; do
    i=$(( (n - 1) * 4 ))
    echo "NATS$n=${p[i]} MQTT$n=${p[i+1]} ROUTE$n=${p[i+2]} MON$n=${p[i+3]}" >>"$dir/env"
  done
  # shellcheck disable=SC1091
  . "$dir/env"
  routes="nats-route://127.0.0.1:$ROUTE1, nats-route://127.0.0.1:$ROUTE2, nats-route://127.0.0.1:$ROUTE3"
  for n in 1 2 3; do
    nv="NATS$n"; mv="MQTT$n"; rv="ROUTE$n"; ov="MON$n"
    mkdir -p "$dir/n$n"
    cat >"$dir/n$n.conf" <<CONF
server_name: n$n
listen: 127.0.0.1:${!nv}
http: 127.0.0.1:${!ov}
pid_file: "$dir/n$n.pid"
jetstream { store_dir: "$dir/n$n" }
cluster {
  name: ioc
  listen: 127.0.0.1:${!rv}
  routes: [$routes]
}
mqtt {
  listen: 127.0.0.1:${!mv}
  # Redelivery of an unacknowledged QoS 1 message (the default, 30 s, is
  # longer than an agent takes to reconnect elsewhere).
  ack_wait: "10s"
}
CONF
  done
  for n in 1 2 3; do start_node "$n"; done
  # Ready when the JetStream meta group has a leader.
  for _ in $(seq 150); do
    if curl -fsS "http://127.0.0.1:$MON1/jsz" 2>/dev/null | grep -q '"leader"'; then
      exit 0
    fi
    sleep 0.2
  done
  echo "the cluster elected no JetStream leader in 30 s; see $dir/n*.log" >&2
  exit 1
  ;;
node)
  start_node "${3:?node number 1..3}"
  ;;
stop)
  pids=()
  for n in 1 2 3; do
    if [ -f "$dir/n$n.pid" ]; then
      pid=$(cat "$dir/n$n.pid"); pids+=("$pid")
      kill "$pid" 2>/dev/null || true
    fi
  done
  # Gone before anyone removes their storage.
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && exit 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  ;;
*)
  echo "usage: $0 start|node|stop DIR [N]" >&2; exit 2 ;;
esac
