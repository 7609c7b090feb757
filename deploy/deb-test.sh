#!/usr/bin/env bash
# Installs the built .deb on this machine, checks what it installed, and
# removes it again (purge), leaving the machine as it was. Needs root (or sudo).
#   deploy/deb-test.sh target/debian/ioc-agent_*.deb
set -euo pipefail
DEB=${1:?usage: deploy/deb-test.sh PACKAGE.deb}
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if dpkg-query -W -f='${Status}' ioc-agent 2>/dev/null | grep -q "install ok installed"; then
  echo "deb-test: ioc-agent is already installed here; not touching it" >&2
  exit 1
fi
cleanup() { sudo_ dpkg --purge ioc-agent >/dev/null 2>&1 || true; }
trap cleanup EXIT
sudo_ dpkg -i "$DEB"
fail() { echo "deb-test: $*" >&2; exit 1; }
/usr/bin/ioc-agent --version | grep -q "ioc-agent" || fail "binary does not run"
[ -f /usr/lib/ioc-agent/libonnxruntime.so.1.31.1 ] || fail "ONNX Runtime missing"
[ -f /usr/share/ioc-agent/models/yolox_nano.toml ] || fail "manifests missing"
[ -f /lib/systemd/system/ioc-agent.service ] || [ -f /usr/lib/systemd/system/ioc-agent.service ] || fail "unit missing"
getent passwd ioc-agent >/dev/null || fail "user ioc-agent not created"
[ "$(stat -c %U /var/lib/ioc-agent)" = ioc-agent ] || fail "/var/lib/ioc-agent not owned by ioc-agent"
[ "$(stat -c %a /etc/ioc-agent/agent.toml)" = 640 ] || fail "agent.toml is not 0640"
unit=$(ls /lib/systemd/system/ioc-agent.service /usr/lib/systemd/system/ioc-agent.service 2>/dev/null | head -1)
systemd-analyze verify "$unit" || fail "systemd-analyze verify rejects $unit"
# The installed doctor finds GStreamer, the decoders and ONNX Runtime.
ORT_DYLIB_PATH=/usr/lib/ioc-agent/libonnxruntime.so.1.31.1 /usr/bin/ioc-agent doctor | tee /tmp/ioc-deb-doctor.txt
grep -q "^PASS  ONNX Runtime" /tmp/ioc-deb-doctor.txt || fail "doctor: ONNX Runtime"
grep -q "^PASS  decoder h264" /tmp/ioc-deb-doctor.txt || fail "doctor: decoder"
sudo_ dpkg --purge ioc-agent
trap - EXIT
[ ! -e /usr/bin/ioc-agent ] || fail "purge left /usr/bin/ioc-agent"
[ ! -e /var/lib/ioc-agent ] || fail "purge left /var/lib/ioc-agent"
! getent passwd ioc-agent >/dev/null || fail "purge left the user"
echo "deb-test: installed, checked and purged $(basename "$DEB")"
