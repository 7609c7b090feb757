#!/usr/bin/env bash
# cargo deny (advisories, licences, bans, sources; policy in deny.toml) against
# the offline RustSec advisory snapshot, with no network for the advisories:
#   scripts/deny.sh [check...]        (make deny; make test runs it)
#
# The snapshot (../shared/advisory-db beside the clone, read-only, no .git;
# ADVISORY_DB= to use another) is laid out the way cargo-deny expects a
# fetched database: under db-path (deny.toml; $IOC_ADVISORY_DBS, set here to
# <target dir>/advisory-dbs) in the directory named after the default
# database URL, its crates/ a symlink to the snapshot's, and .git/FETCH_HEAD
# stamped with the snapshot's date, which is what cargo-deny's staleness check
# (maximum-db-staleness) reads. cargo-deny then runs with --offline, so it
# never fetches the database; the crates themselves are fetched first from
# crates.io (cargo fetch --locked: every platform's, which cargo metadata
# needs), so it also works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

ADVISORY_DB=${ADVISORY_DB:-$PWD/../shared/advisory-db}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
export IOC_ADVISORY_DBS=$TARGET/advisory-dbs
# cargo-deny 0.20's directory for the default database URL (a hash of the URL).
DB_DIR=$IOC_ADVISORY_DBS/advisory-db-3157b0e258782691
MAX_AGE_DAYS=365 # keep in step with maximum-db-staleness in deny.toml

fail() { echo "deny: $*" >&2; exit 1; }

[ -d "$ADVISORY_DB/crates" ] || fail "no RustSec advisory snapshot at $ADVISORY_DB (expected its crates/ folder):" \
  "put a copy of the RustSec advisory-db repository there, or set ADVISORY_DB=/path/to/advisory-db"

# The snapshot's date: the commit date of a git clone, else the date in SNAPSHOT.
if [ -d "$ADVISORY_DB/.git" ]; then
  snap_date=$(git -C "$ADVISORY_DB" log -1 --format=%cs)
  snap_id=$(git -C "$ADVISORY_DB" log -1 --format=%h)
else
  snap_date=$(sed -n 's/.*(\([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\)).*/\1/p' "$ADVISORY_DB/SNAPSHOT" 2>/dev/null | head -n1)
  snap_id=$(sed -n 's/.*commit \([0-9a-f]\{7\}\).*/\1/p' "$ADVISORY_DB/SNAPSHOT" 2>/dev/null | head -n1)
fi
[ -n "$snap_date" ] || fail "cannot tell the date of the advisory snapshot $ADVISORY_DB:" \
  "it is not a git clone and its SNAPSHOT file has no (YYYY-MM-DD) date"
age_days=$(( ($(date -u +%s) - $(date -u -d "$snap_date" +%s)) / 86400 ))
echo "deny: RustSec advisory snapshot ${snap_id:-?} of $snap_date ($age_days days old) from $ADVISORY_DB"
if [ "$age_days" -gt "$MAX_AGE_DAYS" ]; then
  fail "the advisory snapshot is $age_days days old, over the $MAX_AGE_DAYS-day limit: advisories" \
    "published since are not checked. Refresh $ADVISORY_DB from the RustSec advisory-db repository" \
    "(maximum-db-staleness in deny.toml and MAX_AGE_DAYS in scripts/deny.sh set the limit)"
elif [ "$age_days" -gt 90 ]; then
  echo "deny: warning: the advisory snapshot is over 90 days old; refresh $ADVISORY_DB when you can"
fi

mkdir -p "$DB_DIR/.git"
ln -sfn "$(realpath "$ADVISORY_DB")/crates" "$DB_DIR/crates"
echo "$snap_id RustSec advisory-db snapshot $snap_date" > "$DB_DIR/.git/FETCH_HEAD"
touch -d "$snap_date 00:00:00 UTC" "$DB_DIR/.git/FETCH_HEAD"

# deny.toml ignores the rustls-webpki 0.102 / rustls-pemfile advisories on the ground that
# rumqttc only links them: the agent hands rumqttc a rustls ClientConfig of its own
# (TlsConfiguration::Rustls) and loads no CRL. Code that breaks that voids the ignores.
if hits=$(grep -rnE 'TlsConfiguration::Simple|rustls_pemfile|webpki::|with_crls|CertRevocationList' agent); then
  fail "the [advisories] ignores in deny.toml (RUSTSEC-2026-0049/-0098/-0099/-0104, RUSTSEC-2025-0134)" \
    "assume the agent never uses rumqttc's own PEM/webpki path or CRLs, but:"$'\n'"$hits"$'\n'"Build the TLS" \
    "config as agent/publish/mod.rs tls_config does, or re-assess those advisories and update deny.toml"
fi

CARGO=${CARGO:-cargo}
"$CARGO" fetch --locked --quiet || fail "cargo fetch --locked failed: the crates in Cargo.lock could not be" \
  "downloaded from crates.io (or Cargo.lock is out of date: run cargo build and commit it)"
# Inclusion graphs (which crate pulls in which) only when something fails: the duplicate-version
# warnings alone would print ~700 lines on every run (~80 without).
if ! "$CARGO" deny --offline --locked check --hide-inclusion-graph "$@"; then
  "$CARGO" deny --offline --locked check "$@" || true
  echo "deny: cargo deny failed; each error above names the crate, the rule (deny.toml) and how" >&2
  echo "deny: the crate comes in. For an advisory: upgrade the crate (cargo update -p NAME), or, only" >&2
  echo "deny: if it cannot apply to ioc-agent, add it to [advisories] ignore in deny.toml with the id" >&2
  echo "deny: and the reason. For a licence: check it and add it to [licenses] allow, or avoid the crate." >&2
  exit 1
fi
