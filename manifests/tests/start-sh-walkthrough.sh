#!/usr/bin/env bash
# start-sh-walkthrough.sh: runs manifests/base/postgresql/start.sh for real against the local
# PostgreSQL 15 binaries, as the lab does: two "regions" a (127.0.0.2) and b (127.0.0.3) on
# the same port, each with a role directory standing in for the `postgresql-role` ConfigMap.
# It walks init -> clone -> replication -> split-brain guard -> emergency failover -> rewind
# rejoin -> planned failback ("no rewind required") -> both fallbacks to a fresh base backup
# -> a clone killed half-way, checking data and log lines at each step.
#
# Usage: manifests/tests/start-sh-walkthrough.sh   (as root: runs PostgreSQL as `postgres`)
# Env: PG_BIN [/usr/lib/postgresql/15/bin]  PORT [55432]  ROWS [200000]  KEEP=1 keeps $WORK
set -Eeuo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/../base/postgresql/start.sh
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55432}
ROWS=${ROWS:-200000}
PW='s3cr:et\pw with spaces'   # exercises the passfile escaping
declare -A ADDR=([a]=127.0.0.2 [b]=127.0.0.3) PEER=([a]=b [b]=a)
WORK=$(mktemp -d /tmp/start-sh-walkthrough.XXXXXX)
AS_PG=()
if [[ $(id -u) == 0 ]]; then chown postgres: "$WORK"; AS_PG=(runuser -u postgres --); fi
chmod 755 "$WORK"
PGIDS=()

step() { printf '\n=== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
fail() { printf '  FAIL: %s\n' "$*"; for n in a b; do echo "--- $n.log (tail)"; tail -n 30 "$WORK/$n.log" 2>/dev/null || true; done; exit 1; }

pm_pid() { head -n1 "$WORK/$1/pgdata/postmaster.pid" 2>/dev/null || true; }
cleanup() {
  local n pid pg i
  for n in a b; do pid=$(pm_pid "$n"); [[ -z $pid ]] || kill -INT "$pid" 2>/dev/null || true; done
  for i in $(seq 1 20); do pgrep -f "$WORK/" >/dev/null || break; sleep 0.5; done
  for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
  if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

set_role() {  # set_role NODE primary|standby
  local n=$1 dir=$WORK/$1/role
  mkdir -p "$dir"
  printf '%s' "$2" >"$dir/role"
  if [[ $2 == standby ]]; then printf '%s' "${ADDR[${PEER[$n]}]}" >"$dir/primary_host"; else : >"$dir/primary_host"; fi
  printf '%s' "$PORT" >"$dir/primary_port"
  printf '%s' "${ADDR[${PEER[$n]}]}" >"$dir/peer_host"
  printf '%s' "$PORT" >"$dir/peer_port"
  [[ $(id -u) != 0 ]] || chown -R postgres: "$WORK/$n"
}
node_env() {
  echo env -i PATH=/usr/bin:/bin HOME="$WORK" PGDATA="$WORK/$1/pgdata" ROLE_DIR="$WORK/$1/role" \
    LISTEN_ADDRESS="${ADDR[$1]}" PORT="$PORT" PG_BIN="$PG_BIN" PG_CTL_TIMEOUT=60
}
# start_node NODE: start.sh in the background (own process group); wait until it serves TCP.
start_node() {
  local n=$1 pid i
  echo "----- start $(date -u +%T)" >>"$WORK/$n.log"
  # shellcheck disable=SC2046
  setsid "${AS_PG[@]}" $(node_env "$n") POSTGRES_PASSWORD="$PW" bash "$SCRIPT" >>"$WORK/$n.log" 2>&1 &
  pid=$!; PGIDS+=("$pid")
  for i in $(seq 1 240); do
    "$PG_BIN/pg_isready" -q -h "${ADDR[$n]}" -p "$PORT" && return 0
    kill -0 "$pid" 2>/dev/null || fail "start.sh for $n exited: $(grep 'start.sh' "$WORK/$n.log" | tail -n1)"
    sleep 0.5
  done
  fail "$n not ready after 120s"
}
# run_node NODE [ARGS]: start.sh in the foreground, for runs expected to stop (guard, plan).
run_node() {
  local n=$1; shift
  echo "----- run $(date -u +%T)" >>"$WORK/$n.log"
  # shellcheck disable=SC2046
  "${AS_PG[@]}" $(node_env "$n") POSTGRES_PASSWORD="$PW" bash "$SCRIPT" "$@" >>"$WORK/$n.log" 2>&1
}
stop_node() {  # stop_node NODE fast|kill
  local n=$1 pid i
  pid=$(pm_pid "$n"); [[ -n $pid ]] || fail "$n has no postmaster"
  if [[ $2 == kill ]]; then kill -KILL "$pid"; else kill -INT "$pid"; fi
  for i in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  fail "$n did not stop"
}
q() { PGPASSWORD=$PW "$PG_BIN/psql" -X -q -At -h "${ADDR[$1]}" -p "$PORT" -U appuser -d appdb -c "$2"; }
su_q() { "${AS_PG[@]}" "$PG_BIN/psql" -X -q -At -h "$WORK/$1" -p "$PORT" -U postgres -d postgres -c "$2"; }
ids() { q "$1" "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"; }
expect_log() { grep -qE "$2" <(sed -n '/^----- /h; //!H; ${x;p}' "$WORK/$1.log") || fail "$1: no log line matching /$2/"; ok "$1 log: $(grep -E "$2" "$WORK/$1.log" | tail -n1 | sed 's/^[^ ]* start.sh: //' | cut -c1-150)"; }
expect_eq() { [[ $1 == "$2" ]] || fail "$3: got '$1', want '$2'"; ok "$3 = $2"; }
wait_replayed() {  # wait_replayed PRIMARY STANDBY
  local target i
  target=$(q "$1" "SELECT pg_current_wal_lsn()")
  for i in $(seq 1 60); do
    [[ $(q "$2" "SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn") == t ]] && return 0
    sleep 0.5
  done
  fail "$2 did not replay $1's WAL up to $target"
}
streaming() { su_q "$1" "SELECT pg_is_in_recovery()::text || '/' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')"; }

step "1. region a: empty PGDATA + role primary -> init-primary"
set_role a primary; start_node a
expect_log a 'decision=init-primary'
q a "CREATE TABLE t (id int PRIMARY KEY, note text); CREATE TABLE bulk AS SELECT g, md5(g::text) AS pad FROM generate_series(1, $ROWS) g"
q a "INSERT INTO t VALUES (1, 'a, timeline 1')"
expect_eq "$(su_q a "SHOW data_checksums")/$(su_q a "SHOW wal_log_hints")" "on/on" "a data_checksums/wal_log_hints"

step "2. region b: empty PGDATA + role standby -> clone-standby"
set_role b standby; start_node b
expect_log b 'decision=clone-standby'
expect_log b 'base backup done'
wait_replayed a b
expect_eq "$(ids b)" "1" "rows on b"
expect_eq "$(su_q a "SELECT slot_name || ':' || active FROM pg_replication_slots")" "dr_slot:true" "slot on a"

step "3. write on the primary, read it on the standby"
q a "INSERT INTO t VALUES (2, 'a, streamed to b')"
wait_replayed a b
expect_eq "$(ids b)" "1,2" "rows on b"
expect_eq "$(streaming b)" "true/streaming" "b recovery/wal receiver"

step "4. split-brain guard: b told to become primary while a is a live primary"
stop_node b fast; set_role b primary
if run_node b; then fail "b promoted next to a live primary"; fi
expect_log b 'split-brain guard: .* live primary'

step "5. emergency failover: a writes what b never gets, a dies, b is promoted (role primary)"
q a "INSERT INTO t VALUES (3, 'only on a: lost at failover')"
stop_node a kill
start_node b
expect_log b 'decision=promote'
expect_log b 'promote: promoted, timeline 1 -> 2'
q b "INSERT INTO t VALUES (4, 'b, timeline 2')"
expect_eq "$(ids b)" "1,2,4" "rows on new primary b"

step "6. a comes back with role standby -> rejoin by pg_rewind (a crashed: pg_rewind recovers it first)"
set_role a standby; start_node a
expect_log a 'decision=rejoin'
expect_log a 'rejoin: pg_rewind from .* kB copied'
expect_log a 'rejoin: verified'
q b "INSERT INTO t VALUES (5, 'b, after rejoin')"
wait_replayed b a
expect_eq "$(ids a)" "1,2,4,5" "rows on a (3 discarded)"
expect_eq "$(streaming a)" "true/streaming" "a recovery/wal receiver"

step "7. split-brain guard: the rejoined standby a is told role=primary while b is still primary"
stop_node a fast; set_role a primary
if run_node a; then fail "a promoted next to a live primary"; fi
expect_log a 'split-brain guard: the peer .* is a live primary'
set_role a standby; start_node a
expect_log a 'decision=start-standby'

step "8. planned failback, zero loss: b stopped cleanly, a promoted, b rejoins without rewinding"
q b "INSERT INTO t VALUES (6, 'b, last write before failback')"
wait_replayed b a
stop_node b fast
sleep 1
stop_node a fast; set_role a primary; start_node a
expect_log a 'promote: promoted, timeline 2 -> 3'
set_role b standby; start_node b
expect_log b 'no rewind required'
expect_log b 'rejoin: verified'
q a "INSERT INTO t VALUES (7, 'a, timeline 3')"
wait_replayed a b
expect_eq "$(ids b)" "1,2,4,5,6,7" "rows on b (nothing lost)"

step "9. late rejoin after an online promotion without a slot: rewind works, WAL is gone -> fresh base backup"
su_q b "SELECT pg_promote(true, 60)" >/dev/null   # what drdctl does, without creating a slot
set_role b primary                                   # ... and then it updates the ConfigMap
q a "INSERT INTO t VALUES (8, 'only on a: split brain')"
stop_node a kill
for i in 1 2 3 4; do
  q b "INSERT INTO t VALUES (10$i, 'b churn'); UPDATE bulk SET pad = pad WHERE g % 20 = $i"
  su_q b "SELECT pg_switch_wal()" >/dev/null; su_q b "CHECKPOINT"
done
set_role a standby; start_node a
expect_log a 'fresh base backup because the primary no longer has the WAL'
wait_replayed b a
expect_eq "$(ids a)" "1,2,4,5,6,7,101,102,103,104" "rows on a (8 discarded)"
ls -d "$WORK"/a/pgdata.old-* >/dev/null || fail "old PGDATA not kept"

step "10. old primary b returns with a stale role=primary (guard refuses); as standby its rewind is impossible (WAL gone) -> fresh base backup"
su_q a "SELECT pg_promote(true, 60)" >/dev/null; set_role a primary
q b "INSERT INTO t VALUES (9, 'only on b: split brain')"
stop_node b kill
"${AS_PG[@]}" find "$WORK/b/pgdata/pg_wal" -maxdepth 1 -type f -name '0000*' ! -name '*.history' -delete
set_role b primary   # the old primary comes back with its stale role
if run_node b; then fail "b started as a second primary"; fi
expect_log b 'split-brain guard: the peer .* is a primary of this cluster on timeline'
set_role b standby; start_node b
expect_log b 'fresh base backup because pg_rewind failed'
wait_replayed a b
expect_eq "$(streaming b)" "true/streaming" "b recovery/wal receiver"

step "11. a clone killed half-way is cleaned up by the next start"
stop_node b fast
"${AS_PG[@]}" rm -rf "$WORK/b/pgdata"
echo "----- start (to be killed)" >>"$WORK/b.log"
# shellcheck disable=SC2046
setsid "${AS_PG[@]}" $(node_env b) POSTGRES_PASSWORD="$PW" bash "$SCRIPT" >>"$WORK/b.log" 2>&1 &
pg=$!; PGIDS+=("$pg")
for i in $(seq 1 200); do [[ -d $WORK/b/pgdata.clone-tmp ]] && break; sleep 0.05; done
kill -KILL -- "-$pg"; { wait "$pg"; } 2>/dev/null || true
[[ -d $WORK/b/pgdata.clone-tmp && ! -e $WORK/b/pgdata ]] || fail "expected a half-made clone"
ok "killed during pg_basebackup: pgdata.clone-tmp left, no pgdata"
start_node b
expect_log b 'removing an incomplete clone'
wait_replayed a b

step "12. plan mode (no changes): what a restart of each node would do"
run_node a --dry-run; run_node b --dry-run
expect_log a '^role=primary pgdata=primary decision=start-primary'
expect_log b '^role=standby pgdata=standby decision=start-standby'

step "summary of start.sh decisions"
for n in a b; do grep -hE 'start.sh: (role=|rejoin: (pg_rewind|fresh|verified)|clone: base|promote: promoted|FATAL: split)' "$WORK/$n.log" | sed "s/^[^ ]* start.sh: /  $n: /" | cut -c1-170; done
printf '\nPASS\n'
