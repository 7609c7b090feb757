#!/usr/bin/env bash
# The province load run (docs: Delivery, "Load"): a 3-node NATS cluster with
# JetStream and MQTT on loopback (scripts/nats-cluster.sh), AGENTS simulated
# agents × CAMERAS cameras publishing through the real outbox → MQTT path
# with every node in mqtt.failover_urls, the IOC's consumer as workers
# sharing one JetStream durable consumer, node 1 killed (SIGKILL) at
# NODE_FAULT's AT for SECS then restarted, and the first ward's link cut
# for CUT's SECS. The agents' node lists are rotated (`--spread`: a third
# start on each node), as a province should set its wards up; SPREAD=0 puts
# every agent on node 1 first (the worst case for the node kill). Prints the
# table; exit 1 if any alert was lost.
#
#   scripts/province-load.sh                    1,000 cameras for 10 minutes
#   AGENTS=10 SECONDS_RUN=60 NODE_FAULT=15:10 CUT=30:15 scripts/province-load.sh
#   ... [extra loadgen flags, e.g. --json]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${IOC_AGENT_BIN:-$here/../target/release/ioc-agent}
AGENTS=${AGENTS:-100}
CAMERAS=${CAMERAS:-10}
SECONDS_RUN=${SECONDS_RUN:-600}
NODE_FAULT=${NODE_FAULT:-200:30}
CUT=${CUT:-380:60}
SPREAD=${SPREAD:-1}
[ -x "$BIN" ] || { echo "$BIN: not built (cargo build --release, or set IOC_AGENT_BIN)" >&2; exit 2; }

dir=$(mktemp -d /tmp/ioc-province.XXXXXX)
cleanup() { "$here/nats-cluster.sh" stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
"$here/nats-cluster.sh" start "$dir"
# shellcheck disable=SC1091
. "$dir/env"
spread=(); [ "$SPREAD" = 1 ] && spread=(--spread)
"$BIN" loadgen "${spread[@]}" \
  --url "mqtt://127.0.0.1:$MQTT1" \
  --failover-url "mqtt://127.0.0.1:$MQTT2" --failover-url "mqtt://127.0.0.1:$MQTT3" \
  --consumer-nats "nats://127.0.0.1:$NATS2" --consumer-nats "nats://127.0.0.1:$NATS3" \
  --consumer-nats "nats://127.0.0.1:$NATS1" \
  --agents "$AGENTS" --cameras "$CAMERAS" --seconds "$SECONDS_RUN" --drain-secs 120 \
  --broker-pid-file "$dir/n1.pid" --broker-pid-file "$dir/n2.pid" --broker-pid-file "$dir/n3.pid" \
  --node-fault "$NODE_FAULT" \
  --node-stop "kill -9 \$(cat $dir/n1.pid)" \
  --node-start "$here/nats-cluster.sh node $dir 1" \
  --cut-ward-link "$CUT" \
  "$@"
