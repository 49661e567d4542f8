#!/usr/bin/env bash
# start.sh: entrypoint of the PostgreSQL 15 pod (StatefulSet `postgresql`), also run by the
# local lab for its PostgreSQL "pods".
#
# It reads the desired role (primary | standby) and, for a standby, the primary to follow; it
# looks at what PGDATA holds; it converges (initdb, clone, promote, rewind) and then execs
# postgres in the foreground. Decision table (see manifests/README.md):
#
#   desired role  PGDATA holds          action
#   primary       nothing               init-primary   initdb + roles + app database
#   primary       a primary             start-primary
#   primary       a standby             promote        start as standby, pg_ctl promote, restart
#   standby       nothing               clone-standby  pg_basebackup from the primary
#   standby       a standby             start-standby  (re)point primary_conninfo, start
#   standby       a primary             rejoin         pg_rewind from the primary, fall back to a
#                                                      fresh base backup (old PGDATA kept aside)
#
# Everything comes from the environment (defaults in brackets):
#   PGDATA [/var/lib/postgresql/data/pgdata]  must be a subdirectory of the volume, because
#                                             new data directories are renamed into place
#   PG_BIN [/usr/lib/postgresql/15/bin]
#   ROLE_DIR [/etc/postgresql-role]           the mounted `postgresql-role` ConfigMap: files
#                                             role (drdctl's; else initial_role, the overlay's),
#                                             primary_host, primary_port, peer_host, peer_port.
#                                             role=fenced: refuse to start (an old primary)
#   PG_ROLE, PRIMARY_HOST, PRIMARY_PORT [5432], PEER_HOST [PRIMARY_HOST], PEER_PORT [5432]
#                                             override the files above. The peer is the other
#                                             region's PostgreSQL: see the split-brain guard.
#   LISTEN_ADDRESS [*]  PORT [5432]  SOCKET_DIR [dirname of PGDATA]
#   POSTGRES_USER [postgres]  REPLICATION_USER [replicator]  APP_USER [appuser]  APP_DB [appdb]
#   POSTGRES_PASSWORD, REPLICATION_PASSWORD, APP_PASSWORD  secrets; each one missing falls back
#                                             to the others; never printed, never in argv
#   SLOT_NAME [dr_slot]  APPLICATION_NAME [SLOT_NAME]  PASSFILE [dirname of PGDATA/.pgpass-drd]
#   WAL_KEEP_SIZE [0: slots retain WAL]  MAX_SLOT_WAL_KEEP_SIZE [8GB: a dead peer cannot fill
#   the disk; size it with the volume]  PG_CTL_TIMEOUT [300]  INITDB_ARGS []
#   SUPERUSER_NETWORK_ACCESS [0]  1 lets the superuser log in over non-loopback TCP
#   ALLOW_SECOND_PRIMARY [0]  1 disables the split-brain guard (below)
#   TERM_FILE []  the witness guard's copy of the term: a primary starts only on a fresh term
#   naming TERM_REGION (TERM_MAX_AGE [30] s; ALLOW_NO_TERM [0] 1 skips the check)
#   START_SH_PLAN [0]   1 (or --dry-run) prints the decision and exits without changing anything
#
# Split-brain guard: before starting or promoting as primary, the script asks the peer (if
# reachable) whether it is a primary of the same cluster. It refuses to promote next to a live
# primary, and refuses to start as primary when the peer is a primary on the same or a newer
# timeline (e.g. this region comes back after an emergency failover with a stale role).
#
# The script is idempotent: killed at any point, the next run converges (half-built data
# directories live under PGDATA.init-tmp / PGDATA.clone-tmp until they are complete).
set -Eeuo pipefail
umask 077

log() { printf '%s start.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
oneline() { tr -s '\n\t ' '   ' <<<"$1" | sed 's/ *$//'; }  # multi-line libpq errors -> one line

PLAN=${START_SH_PLAN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run|--plan) PLAN=1 ;;
    -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: start.sh [--dry-run])" ;;
  esac
done

# ---- configuration ------------------------------------------------------------------------
PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
PGDATA=${PGDATA%/}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROLE_DIR=${ROLE_DIR:-/etc/postgresql-role}
PARENT_DIR=$(dirname "$PGDATA")

# A ConfigMap key mounted as a file; an unset/empty env var of the same meaning wins.
from_file() { if [ -r "$ROLE_DIR/$1" ]; then tr -d '[:space:]' <"$ROLE_DIR/$1"; fi; }
PG_ROLE=${PG_ROLE:-$(from_file role)}
PG_ROLE=${PG_ROLE:-$(from_file initial_role)}   # the overlay's role before any failover
PRIMARY_HOST=${PRIMARY_HOST:-$(from_file primary_host)}
PRIMARY_PORT=${PRIMARY_PORT:-$(from_file primary_port)}
PRIMARY_PORT=${PRIMARY_PORT:-5432}
PEER_HOST=${PEER_HOST:-$(from_file peer_host)}
PEER_HOST=${PEER_HOST:-$PRIMARY_HOST}
PEER_PORT=${PEER_PORT:-$(from_file peer_port)}
PEER_PORT=${PEER_PORT:-$PRIMARY_PORT}
# Two regions: a standby whose primary is not named follows the peer.
PRIMARY_HOST=${PRIMARY_HOST:-$PEER_HOST}

LISTEN_ADDRESS=${LISTEN_ADDRESS:-*}
PORT=${PORT:-5432}
SOCKET_DIR=${SOCKET_DIR:-$PARENT_DIR}
POSTGRES_USER=${POSTGRES_USER:-postgres}
REPLICATION_USER=${REPLICATION_USER:-replicator}
APP_USER=${APP_USER:-appuser}
APP_DB=${APP_DB:-appdb}
SLOT_NAME=${SLOT_NAME:-dr_slot}
APPLICATION_NAME=${APPLICATION_NAME:-$SLOT_NAME}
PASSFILE=${PASSFILE:-$PARENT_DIR/.pgpass-drd}
WAL_KEEP_SIZE=${WAL_KEEP_SIZE:-0}
MAX_SLOT_WAL_KEEP_SIZE=${MAX_SLOT_WAL_KEEP_SIZE:-8GB}
PG_CTL_TIMEOUT=${PG_CTL_TIMEOUT:-300}
INITDB_ARGS=${INITDB_ARGS:-}
SUPERUSER_NETWORK_ACCESS=${SUPERUSER_NETWORK_ACCESS:-0}
ALLOW_SECOND_PRIMARY=${ALLOW_SECOND_PRIMARY:-0}

# Secrets: each falls back to the others so that a single `password` works (as in the seed).
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-${APP_PASSWORD:-${REPLICATION_PASSWORD:-}}}
APP_PASSWORD=${APP_PASSWORD:-$POSTGRES_PASSWORD}
REPLICATION_PASSWORD=${REPLICATION_PASSWORD:-$POSTGRES_PASSWORD}
export POSTGRES_PASSWORD APP_PASSWORD REPLICATION_PASSWORD   # read by psql's \getenv only

# Validate what ends up in SQL, conninfo strings or config files without quoting.
ident_re='^[a-z_][a-z0-9_]{0,62}$'
if [[ $PG_ROLE == fenced ]]; then
  die "this database was fenced by a failover away from this region ($ROLE_DIR/role=fenced): it must never start writable again. Bring it back as a standby with 'drdctl failback' (it rewinds it); it does not start until then"
fi
[[ $PG_ROLE == primary || $PG_ROLE == standby ]] ||
  die "desired role is '${PG_ROLE}': set PG_ROLE or $ROLE_DIR/role (or initial_role) to primary or standby"
for v in SLOT_NAME APPLICATION_NAME REPLICATION_USER POSTGRES_USER APP_USER APP_DB; do
  [[ ${!v} =~ $ident_re ]] || die "$v='${!v}' must match $ident_re"
done
[[ $PORT =~ ^[0-9]+$ && $PRIMARY_PORT =~ ^[0-9]+$ && $PEER_PORT =~ ^[0-9]+$ ]] ||
  die "PORT, PRIMARY_PORT and PEER_PORT must be numbers"
[[ $PRIMARY_HOST =~ ^[A-Za-z0-9._:-]*$ ]] || die "PRIMARY_HOST='$PRIMARY_HOST' is not a host name or address"
[[ $PEER_HOST =~ ^[A-Za-z0-9._:-]*$ ]] || die "PEER_HOST='$PEER_HOST' is not a host name or address"
[[ $PASSFILE =~ ^[A-Za-z0-9._/-]+$ ]] || die "PASSFILE='$PASSFILE' must be a plain path"
[[ $SOCKET_DIR =~ ^[A-Za-z0-9._/-]+$ ]] || die "SOCKET_DIR='$SOCKET_DIR' must be a plain path"
[[ $LISTEN_ADDRESS =~ ^[A-Za-z0-9.:,*\ -]*$ ]] || die "LISTEN_ADDRESS='$LISTEN_ADDRESS' is not a list of addresses"
if [[ $PG_ROLE == standby && -z $PRIMARY_HOST ]]; then
  die "desired role is standby but no primary is configured (PRIMARY_HOST or $ROLE_DIR/primary_host)"
fi

export LC_ALL=C PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE  # only our explicit settings count

# ---- inspection ---------------------------------------------------------------------------
pgdata_state() {
  if [[ ! -d $PGDATA ]] || [[ -z $(ls -A "$PGDATA") ]]; then echo empty
  elif [[ ! -f $PGDATA/PG_VERSION ]]; then echo invalid
  elif [[ -f $PGDATA/standby.signal ]]; then echo standby
  else echo primary
  fi
}
controldata() {  # controldata DIR 'Field name' -> value
  "$PG_BIN/pg_controldata" -D "$1" 2>/dev/null | sed -n "s/^$2: *//p"
}

STATE=$(pgdata_state)
case "$PG_ROLE/$STATE" in
  primary/empty) DECISION=init-primary ;;
  primary/primary) DECISION=start-primary ;;
  primary/standby) DECISION=promote ;;
  standby/empty) DECISION=clone-standby ;;
  standby/standby) DECISION=start-standby ;;
  standby/primary) DECISION=rejoin ;;
  */invalid) die "PGDATA=$PGDATA is not empty but holds no PG_VERSION; refusing to touch it" ;;
esac

if [[ $PLAN == 1 ]]; then
  echo "role=$PG_ROLE pgdata=$STATE decision=$DECISION"
  if [[ $STATE != empty ]]; then
    echo "cluster_state=\"$(controldata "$PGDATA" 'Database cluster state')\" timeline=$(controldata "$PGDATA" "Latest checkpoint's TimeLineID")"
  fi
  case $DECISION in
    init-primary) echo "plan: initdb $PGDATA (data checksums), create $REPLICATION_USER, $APP_USER, database $APP_DB; start" ;;
    start-primary) echo "plan: start as primary (split-brain guard: asks the peer ${PEER_HOST:-<none>}:$PEER_PORT first)" ;;
    promote) echo "plan: start the standby, pg_ctl promote (new timeline), create slot $SLOT_NAME for the old primary, restart as primary (split-brain guard: asks the peer ${PEER_HOST:-<none>}:$PEER_PORT first)" ;;
    clone-standby) echo "plan: pg_basebackup from $PRIMARY_HOST:$PRIMARY_PORT using slot $SLOT_NAME; start as standby" ;;
    start-standby) echo "plan: start as standby of $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT_NAME)" ;;
    rejoin) echo "plan: pg_rewind from $PRIMARY_HOST:$PRIMARY_PORT, fallback fresh base backup (old PGDATA kept as $PGDATA.old-<timestamp>); start as standby" ;;
  esac
  exit 0
fi

[[ $(id -u) != 0 ]] || die "PostgreSQL must not run as root: run this script as the postgres user"
[[ -x $PG_BIN/postgres ]] || die "no postgres binary in PG_BIN=$PG_BIN"
[[ -d $PARENT_DIR && -w $PARENT_DIR ]] || die "$PARENT_DIR (parent of PGDATA) must exist and be writable"
mkdir -p "$SOCKET_DIR"

# A live postmaster on PGDATA (other than a stale pid file, e.g. PID 1 of a previous container).
if [[ -f $PGDATA/postmaster.pid ]]; then
  pid=$(head -n1 "$PGDATA/postmaster.pid")
  if [[ $pid =~ ^[0-9]+$ && $pid != "$$" && $pid != "$PPID" ]] && kill -0 "$pid" 2>/dev/null; then
    die "a postmaster (pid $pid) is already running on $PGDATA"
  fi
fi

# ---- helpers ------------------------------------------------------------------------------
TEMP_SERVER=
TRIAL_PID=
cleanup() {  # never leave a temporary server behind
  if [[ -n $TRIAL_PID ]]; then
    stop_trial_server
  fi
  if [[ -n $TEMP_SERVER ]]; then
    "$PG_BIN/pg_ctl" -D "$TEMP_SERVER" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'log "FATAL: command failed at line $LINENO (exit $?)"' ERR

# Server configuration owned by this script, regenerated on every start (pg_basebackup and
# pg_rewind copy the peer's files, so nothing here may depend on history). Tuning goes through
# ALTER SYSTEM (postgresql.auto.conf), which is read after this file.
write_config() {
  local dir=$1 os_user
  cat >"$dir/drd-managed.conf" <<EOF
# Managed by start.sh; regenerated on every start. Use ALTER SYSTEM for tuning.
listen_addresses = '$LISTEN_ADDRESS'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
password_encryption = 'scram-sha-256'
wal_level = replica
wal_log_hints = on            # pg_rewind (data checksums are on too for clusters made here)
full_page_writes = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '$WAL_KEEP_SIZE'
max_slot_wal_keep_size = '$MAX_SLOT_WAL_KEEP_SIZE'
hot_standby = on
EOF
  grep -q "^include_if_exists = 'drd-managed.conf'" "$dir/postgresql.conf" ||
    printf "\ninclude_if_exists = 'drd-managed.conf'\n" >>"$dir/postgresql.conf"

  os_user=$(id -un 2>/dev/null || true)
  {
    echo "# Managed by start.sh; regenerated on every start."
    echo "drd_local  /^(.*)\$  \\1"
    [[ -z $os_user ]] || echo "drd_local  $os_user  $POSTGRES_USER"
  } >"$dir/pg_ident.conf"
  {
    echo "# Managed by start.sh; regenerated on every start. Network reach is limited by the NetworkPolicies."
    echo "local  all          all                       peer map=drd_local"
    echo "host   all          all      127.0.0.0/8      scram-sha-256"
    echo "host   all          all      ::1/128          scram-sha-256"
    if [[ $SUPERUSER_NETWORK_ACCESS != 1 ]]; then
      echo "host   all          $POSTGRES_USER  0.0.0.0/0  reject"
      echo "host   all          $POSTGRES_USER  ::/0       reject"
    fi
    echo "host   replication  $REPLICATION_USER  0.0.0.0/0  scram-sha-256"
    echo "host   replication  $REPLICATION_USER  ::/0       scram-sha-256"
    echo "host   all          all      0.0.0.0/0        scram-sha-256"
    echo "host   all          all      ::/0             scram-sha-256"
  } >"$dir/pg_hba.conf"
}

# The replication password goes to a 0600 passfile (used by primary_conninfo, pg_basebackup,
# pg_rewind), so it never appears in argv, postgresql.auto.conf or the logs.
write_passfile() {
  if [[ -z $REPLICATION_PASSWORD ]]; then
    [[ -f $PASSFILE ]] && { log "no REPLICATION_PASSWORD; keeping the existing $PASSFILE"; return; }
    die "no REPLICATION_PASSWORD (nor POSTGRES_PASSWORD) to reach the primary"
  fi
  local pw=${REPLICATION_PASSWORD//\\/\\\\}
  pw=${pw//:/\\:}
  printf '*:*:*:%s:%s\n' "$REPLICATION_USER" "$pw" >"$PASSFILE.tmp"
  chmod 600 "$PASSFILE.tmp" && mv -f "$PASSFILE.tmp" "$PASSFILE"
}

conninfo_for() {  # conninfo_for HOST PORT [CONNECT_TIMEOUT]
  echo "host=$1 port=$2 user=$REPLICATION_USER passfile=$PASSFILE application_name=$APPLICATION_NAME connect_timeout=${3:-10} keepalives_idle=30 keepalives_interval=10 keepalives_count=3"
}
remote_conninfo() { conninfo_for "$PRIMARY_HOST" "$PRIMARY_PORT"; }
remote_sql() {  # remote_sql SQL -> unaligned output; runs on the primary as REPLICATION_USER
  "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$(remote_conninfo) dbname=postgres" -c "$1"
}

# Highest timeline this data directory knows: pg_control, or a newer .history file (written at
# promotion, before the first checkpoint updates pg_control).
local_timeline() {
  local tli h
  tli=$(controldata "$PGDATA" "Latest checkpoint's TimeLineID")
  for h in "$PGDATA"/pg_wal/*.history; do
    [[ -e $h ]] || continue
    h=$((16#$(basename "$h" .history)))
    ((h > tli)) && tli=$h
  done
  echo "$tli"
}

# Witness term check (docs/witness.md): with TERM_FILE (the guard's copy of the term, written
# at each of its reads) a primary starts, or a standby promotes, only when the term names
# TERM_REGION and the guard read it less than TERM_MAX_AGE seconds ago. ALLOW_NO_TERM=1
# overrides (no witness reachable and the operator decided).
term_check() {
  [[ -n ${TERM_FILE:-} ]] || return 0
  if [[ ${ALLOW_NO_TERM:-0} == 1 ]]; then
    log "WARNING: witness term check skipped (ALLOW_NO_TERM=1)"
    return 0
  fi
  [[ -f $TERM_FILE ]] || die "witness term: $TERM_FILE is missing (the guard has not read the term yet); refusing to start as primary (ALLOW_NO_TERM=1 overrides)"
  local age=$(( $(date +%s) - $(stat -c %Y "$TERM_FILE") ))
  (( age <= ${TERM_MAX_AGE:-30} )) || die "witness term: the guard's copy is ${age}s old (bound ${TERM_MAX_AGE:-30}s: the witness is unreachable); refusing to start as primary (ALLOW_NO_TERM=1 overrides)"
  grep -q "\"region\":\"${TERM_REGION:-}\"" "$TERM_FILE" || die "witness term: it names another region ($(cat "$TERM_FILE")), not ${TERM_REGION:-<TERM_REGION unset>}; refusing to start as primary: rejoin as a standby instead"
  log "witness term names ${TERM_REGION} ($(cat "$TERM_FILE"))"
}

# Split-brain guard helper: the peer's timeline if it is reachable, a primary, and the same
# cluster (system identifier); nothing otherwise (unreachable counts as "not a primary").
peer_primary_timeline() {
  local ci out sys tli
  [[ -n $PEER_HOST && ( -n $REPLICATION_PASSWORD || -f $PASSFILE ) ]] || return 0
  [[ -z $REPLICATION_PASSWORD ]] || write_passfile
  ci=$(conninfo_for "$PEER_HOST" "$PEER_PORT" 5)
  out=$("$PG_BIN/psql" -X -q -At -d "$ci dbname=postgres" -c "SELECT pg_is_in_recovery()" 2>/dev/null) || return 0
  [[ $out == f ]] || return 0
  out=$("$PG_BIN/psql" -X -q -At -F ' ' -d "$ci replication=true" -c "IDENTIFY_SYSTEM" 2>/dev/null) || return 0
  read -r sys tli _ <<<"$out"
  [[ $sys == "$(controldata "$PGDATA" 'Database system identifier')" ]] || return 0
  echo "$tli"
}

# Is the primary reachable, a primary, and does it accept our credentials on both a normal
# and a replication connection? Logs the reason and returns 1 if not.
check_primary() {
  local out
  if ! out=$(remote_sql "SELECT pg_is_in_recovery()" 2>&1); then
    log "cannot query the primary $PRIMARY_HOST:$PRIMARY_PORT as $REPLICATION_USER: $(oneline "$out")"; return 1
  fi
  if [[ $out != f ]]; then
    log "$PRIMARY_HOST:$PRIMARY_PORT is in recovery (a standby), not a primary"; return 1
  fi
  if ! out=$("$PG_BIN/psql" -X -q -At -d "$(remote_conninfo) replication=true" -c "IDENTIFY_SYSTEM" 2>&1); then
    log "replication connection to $PRIMARY_HOST:$PRIMARY_PORT as $REPLICATION_USER refused: $(oneline "$out")"; return 1
  fi
}

# Make sure the primary has our physical slot (created with WAL reserved from now). An
# invalidated ("lost") slot is recreated. With "wait", a slot still held by a walsender is
# waited for: usually our own previous connection that the primary has not dropped yet.
# Returns non-zero with a message on any failure (callers decide whether that is fatal).
ensure_slot() {
  local wait=${1:-} status i
  for i in $(seq 1 12); do
    status=$(remote_sql "SELECT coalesce((SELECT CASE WHEN active THEN 'active' ELSE coalesce(wal_status, 'reserved') END
                          FROM pg_replication_slots WHERE slot_name = '$SLOT_NAME'), 'missing')") ||
      { log "could not read pg_replication_slots on the primary"; return 1; }
    case $status in
      active)
        [[ $wait == wait ]] || return 0
        [[ $i -lt 12 ]] || { log "slot $SLOT_NAME stays active on the primary: another standby uses it?"; return 1; }
        log "slot $SLOT_NAME is active on the primary; waiting for it to be released ($i/12)"; sleep 5 ;;
      lost)
        log "slot $SLOT_NAME on the primary was invalidated (max_slot_wal_keep_size); recreating it." \
            "If this standby then reports missing WAL, it needs a fresh clone."
        remote_sql "SELECT pg_drop_replication_slot('$SLOT_NAME')" >/dev/null ||
          { log "could not drop slot $SLOT_NAME"; return 1; } ;;
      missing)
        remote_sql "SELECT pg_create_physical_replication_slot('$SLOT_NAME', true)" >/dev/null ||
          { log "could not create slot $SLOT_NAME on the primary"; return 1; }
        log "created replication slot $SLOT_NAME on $PRIMARY_HOST:$PRIMARY_PORT"; return 0 ;;
      *) return 0 ;;
    esac
  done
}

# Remove the settings we own from postgresql.auto.conf (server stopped), optionally re-adding
# the standby ones. pg_basebackup/pg_rewind copied the peer's file, which may point anywhere.
set_recovery_settings() {
  local dir=$1 mode=$2 auto=$1/postgresql.auto.conf
  touch "$auto"
  sed -i -E '/^[[:space:]]*(primary_conninfo|primary_slot_name)[[:space:]]*=/d' "$auto"
  if [[ $mode == standby ]]; then
    printf "primary_conninfo = '%s'\nprimary_slot_name = '%s'\n" "$(remote_conninfo)" "$SLOT_NAME" >>"$auto"
    touch "$dir/standby.signal"
    # A slot left over from when this node was a primary would pin WAL here forever.
    if [[ -d $dir/pg_replslot/$SLOT_NAME ]]; then
      log "removing local replication slot $SLOT_NAME (left from this node's time as primary)"
      rm -rf "${dir:?}/pg_replslot/$SLOT_NAME"
    fi
  fi
}

start_temp_server() {  # socket-only, so no client can connect while we work
  TEMP_SERVER=$1
  "$PG_BIN/pg_ctl" -D "$1" -w -t "$PG_CTL_TIMEOUT" -o "-c listen_addresses=''" start >&2
}
stop_temp_server() {
  "$PG_BIN/pg_ctl" -D "$TEMP_SERVER" -m fast -w -t "$PG_CTL_TIMEOUT" stop >&2
  TEMP_SERVER=
}

# pg_basebackup into PGDATA.clone-tmp, then rename into place.
clone_from_primary() {
  local what=$1 tmp=$PGDATA.clone-tmp t0=$SECONDS bytes
  ensure_slot wait || die "$what: could not set up slot $SLOT_NAME on the primary"
  if [[ -e $tmp ]]; then log "$what: removing an incomplete clone from an earlier attempt ($tmp)"; rm -rf "$tmp"; fi
  log "$what: pg_basebackup from $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT_NAME)"
  "$PG_BIN/pg_basebackup" -D "$tmp" -d "$(remote_conninfo)" -X stream -S "$SLOT_NAME" \
    --checkpoint=fast --no-password >&2
  write_config "$tmp"
  set_recovery_settings "$tmp" standby
  bytes=$(du -sb "$tmp" | cut -f1)
  if [[ -d $PGDATA ]]; then rmdir "$PGDATA" || die "$PGDATA must be a plain subdirectory of the volume"; fi
  mv "$tmp" "$PGDATA"
  log "$what: base backup done: $bytes bytes copied in $((SECONDS - t0))s"
}

# The trial server (trial_start_standby's child): alive, and stopped. A fast shutdown
# (SIGINT), then an immediate one (SIGQUIT) if it is not gone within PG_CTL_TIMEOUT; reaped
# either way, so nothing runs on PGDATA afterwards.
trial_running() {
  [[ -n $TRIAL_PID ]] && kill -0 "$TRIAL_PID" 2>/dev/null &&
    [[ $(cut -d' ' -f3 "/proc/$TRIAL_PID/stat" 2>/dev/null) != Z ]]
}
stop_trial_server() {
  local i
  [[ -n $TRIAL_PID ]] || return 0
  kill -INT "$TRIAL_PID" 2>/dev/null || true
  for ((i = 0; i < PG_CTL_TIMEOUT * 20; i++)); do
    trial_running || break
    sleep 0.05
  done
  if trial_running; then
    log "the trial server did not stop within ${PG_CTL_TIMEOUT}s; stopping it immediately"
    kill -QUIT "$TRIAL_PID" 2>/dev/null || true
  fi
  wait "$TRIAL_PID" 2>/dev/null || true
  TRIAL_PID=
}

# After a rewind, start the standby once (socket only) and watch it: it must stream from the
# primary and be consistent. That needs the primary's WAL from the fork point on, which
# pg_rewind does not check; if the primary has recycled it (a late rejoin without a slot), the
# standby would wait forever. Sets VERDICT to ok | missing-wal | died | slow.
#
# Polled every 50 ms (this wait is most of a rejoin's wall time). Verified as soon as the
# standby is consistent (accepts connections), its WAL receiver is streaming and has received
# WAL from the primary past the point it asked for: the primary then had the segment the
# standby needs (it reports a removed one instead of sending it), and newer segments are kept
# by the slot. When nothing has been received yet (the primary has written nothing since that
# point), 1 s of streaming without an error is taken as enough, as before.
trial_start_standby() {
  local settled=0 i received t0=$SECONDS
  TRIAL_LOG=$PARENT_DIR/rejoin-check.log
  VERDICT=slow
  # The postmaster is this script's own child, so "died" is a fact about that process, not
  # about a pid file it may not have written yet (pg_ctl -W returned before it had; polled
  # 50 ms later on a busy machine, that read as "died" and the rejoin failed).
  : >"$TRIAL_LOG"
  "$PG_BIN/postgres" -D "$PGDATA" -c listen_addresses='' >>"$TRIAL_LOG" 2>&1 </dev/null &
  TRIAL_PID=$!
  for ((i = 0; i < PG_CTL_TIMEOUT * 20; i++)); do
    sleep 0.05
    if grep -qE 'has already been removed|is not a child of this server|could not locate' "$TRIAL_LOG"; then
      VERDICT=missing-wal; break
    fi
    if ! trial_running; then VERDICT=died; break; fi
    if "$PG_BIN/pg_isready" -q -h "$SOCKET_DIR" -p "$PORT" && grep -q 'started streaming WAL' "$TRIAL_LOG"; then
      received=$("$PG_BIN/psql" -X -q -At -h "$SOCKET_DIR" -p "$PORT" -U "$POSTGRES_USER" -d postgres -c \
        "SELECT written_lsn > receive_start_lsn FROM pg_stat_wal_receiver WHERE status = 'streaming'" 2>/dev/null) || received=
      if [[ $received == t ]]; then VERDICT=ok TRIAL_HOW="WAL received from the primary"; break; fi
      if ((++settled >= 20)); then VERDICT=ok TRIAL_HOW="streaming for 1 s without an error"; break; fi
    fi
  done
  stop_trial_server
  TRIAL_SECONDS=$((SECONDS - t0))
  sed 's/^/  | /' "$TRIAL_LOG" >&2
}

# ---- actions ------------------------------------------------------------------------------
log "role=$PG_ROLE pgdata=$STATE decision=$DECISION (PGDATA=$PGDATA)"

case $DECISION in
init-primary)
  [[ -n $POSTGRES_PASSWORD ]] || die "init-primary needs POSTGRES_PASSWORD (or APP_PASSWORD)"
  tmp=$PGDATA.init-tmp
  if [[ -e $tmp ]]; then log "removing an incomplete initdb from an earlier attempt ($tmp)"; rm -rf "$tmp"; fi
  # shellcheck disable=SC2086  # INITDB_ARGS is a word list on purpose
  "$PG_BIN/initdb" -D "$tmp" -U "$POSTGRES_USER" --data-checksums --encoding=UTF8 --locale=C \
    --auth-local=peer --auth-host=scram-sha-256 $INITDB_ARGS >&2
  write_config "$tmp"
  start_temp_server "$tmp"
  # Passwords reach the server through psql's \getenv, never argv or the log.
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U "$POSTGRES_USER" -d postgres \
    -v su="$POSTGRES_USER" -v repl="$REPLICATION_USER" -v app="$APP_USER" -v db="$APP_DB" <<'SQL'
\getenv su_pw POSTGRES_PASSWORD
\getenv repl_pw REPLICATION_PASSWORD
\getenv app_pw APP_PASSWORD
ALTER ROLE :"su" PASSWORD :'su_pw';
CREATE ROLE :"repl" WITH LOGIN REPLICATION PASSWORD :'repl_pw';
-- what pg_rewind --source-server needs from a non-superuser, and CHECKPOINT before it
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO :"repl";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO :"repl";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO :"repl";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO :"repl";
GRANT pg_checkpoint TO :"repl";
CREATE ROLE :"app" WITH LOGIN PASSWORD :'app_pw';
CREATE DATABASE :"db" OWNER :"app";
SQL
  stop_temp_server
  if [[ -d $PGDATA ]]; then rmdir "$PGDATA" || die "$PGDATA must be a plain subdirectory of the volume"; fi
  mv "$tmp" "$PGDATA"
  log "init-primary: new cluster, system identifier $(controldata "$PGDATA" 'Database system identifier')"
  ;;

start-primary)
  term_check
  peer_tli=$(peer_primary_timeline)
  if [[ -n $peer_tli ]]; then
    my_tli=$(local_timeline)
    if ((peer_tli >= my_tli)) && [[ $ALLOW_SECOND_PRIMARY != 1 ]]; then
      die "split-brain guard: the peer $PEER_HOST:$PEER_PORT is a primary of this cluster on timeline $peer_tli (ours: $my_tli); refusing to start as a second primary. Rejoin it instead: role=standby, primary_host=$PEER_HOST (ALLOW_SECOND_PRIMARY=1 overrides)"
    fi
    log "WARNING: the peer $PEER_HOST:$PEER_PORT is also a primary, on older timeline $peer_tli (ours: $my_tli): it must be fenced and rejoined"
  fi
  write_config "$PGDATA"
  set_recovery_settings "$PGDATA" primary
  ;;

promote)
  # Removing standby.signal and starting would be wrong: the server would do plain crash
  # recovery and keep writing on the old timeline, so the old primary's diverged WAL and ours
  # would share a timeline ID and pg_rewind could not see the fork. A real promotion replays
  # every WAL record already received, then switches to a new timeline (with a .history file).
  # The fast shutdown afterwards leaves a checkpoint on the new timeline in pg_control.
  term_check
  peer_tli=$(peer_primary_timeline)
  if [[ -n $peer_tli && $ALLOW_SECOND_PRIMARY != 1 ]]; then
    die "split-brain guard: the peer $PEER_HOST:$PEER_PORT is a live primary (timeline $peer_tli); refusing to promote next to it. Fence/stop it first (drdctl failover does), or set ALLOW_SECOND_PRIMARY=1"
  fi
  write_config "$PGDATA"
  old_tli=$(local_timeline)
  start_temp_server "$PGDATA"
  "$PG_BIN/pg_ctl" -D "$PGDATA" -w -t "$PG_CTL_TIMEOUT" promote >&2
  # Keep the WAL from the fork on for the old primary, so that it can rejoin by pg_rewind
  # (bounded by max_slot_wal_keep_size if it never comes back).
  "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U "$POSTGRES_USER" -d postgres -c \
    "SELECT pg_create_physical_replication_slot('$SLOT_NAME', true) WHERE NOT EXISTS
       (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT_NAME')" >/dev/null
  stop_temp_server
  set_recovery_settings "$PGDATA" primary
  log "promote: promoted, timeline $old_tli -> $(local_timeline)"
  ;;

clone-standby)
  write_passfile
  check_primary || die "clone: the primary is not usable (see above); PGDATA untouched, retry later"
  clone_from_primary clone
  ;;

start-standby)
  write_passfile
  write_config "$PGDATA"
  set_recovery_settings "$PGDATA" standby
  # Best effort: a standby must start even when its primary is down (it may be promoted next).
  if ! { check_primary && ensure_slot; }; then
    log "start-standby: could not check slot $SLOT_NAME on $PRIMARY_HOST:$PRIMARY_PORT; starting anyway"
  fi
  ;;

rejoin)
  # This data directory was a primary; a new primary took over. pg_rewind copies only what
  # diverged. It needs wal_log_hints or checksums (always on here) and a cleanly shut down
  # target: PostgreSQL 15's pg_rewind runs single-user crash recovery itself when the target
  # crashed (its log then says "executing ... for target server to complete crash recovery").
  write_passfile
  check_primary || die "rejoin: the primary is not usable (see above); PGDATA untouched, retry later"
  # A freshly promoted primary updates pg_control only at its first checkpoint; pg_rewind
  # reads the source timeline from there and could wrongly conclude "no rewind required".
  remote_sql "CHECKPOINT" >/dev/null || die "rejoin: CHECKPOINT on the primary failed"
  ensure_slot wait || die "rejoin: could not set up slot $SLOT_NAME on the primary"
  log "rejoin: target was \"$(controldata "$PGDATA" 'Database cluster state')\" on timeline $(controldata "$PGDATA" "Latest checkpoint's TimeLineID"); running pg_rewind from $PRIMARY_HOST:$PRIMARY_PORT"
  t0=$SECONDS
  rewind_log=$PARENT_DIR/pg_rewind.log   # kept for the post-mortem; overwritten next time
  if "$PG_BIN/pg_rewind" --target-pgdata="$PGDATA" --progress \
       --source-server="$(remote_conninfo) dbname=postgres" >"$rewind_log" 2>&1; then rc=0; else rc=$?; fi
  tr '\r' '\n' <"$rewind_log" | grep -v '^$' | sed 's/^/  | /' >&2 || true
  if [[ $rc == 0 ]]; then
    if grep -q 'no rewind required' "$rewind_log"; then
      log "rejoin: pg_rewind: no rewind required (this node's WAL is already part of the primary's history), 0 bytes copied"
    else
      fork=$(sed -n 's/.*servers diverged at WAL location \(.*\)$/\1/p' "$rewind_log" | head -n1)
      kb=$(tr '\r' '\n' <"$rewind_log" | sed -n 's|.*/\([0-9]*\) kB (100%) copied.*|\1|p' | tail -n1)
      log "rejoin: pg_rewind from $PRIMARY_HOST:$PRIMARY_PORT in $((SECONDS - t0))s: servers diverged at ${fork:-?}; ${kb:-?} kB copied"
    fi
    write_config "$PGDATA"
    set_recovery_settings "$PGDATA" standby
    trial_start_standby
    case $VERDICT in
      ok) log "rejoin: verified: the rewound standby is consistent and streaming ($TRIAL_HOW; trial start ${TRIAL_SECONDS}s)" ;;
      slow) log "rejoin: the rewound standby is not streaming yet after ${PG_CTL_TIMEOUT}s; continuing" ;;
      missing-wal) rc=verify reason="the primary no longer has the WAL this node needs since the fork (pg_rewind itself succeeded)" ;;
      *) rc=verify reason="the rewound standby did not start (see $TRIAL_LOG)" ;;
    esac
  fi
  if [[ $rc != 0 ]]; then
    # Rewind impossible (no common history, WAL before the fork gone, different system, ...)
    # or failed half-way (then the directory is unusable). Keep the old data, clone fresh.
    if [[ $rc != verify ]]; then
      reason=$(grep -E 'error:|fatal:' "$rewind_log" | tail -n1 | sed 's/^pg_rewind: //')
      reason="pg_rewind failed (exit $rc: ${reason:-see $rewind_log})"
    fi
    aside=$PGDATA.old-$(date -u +%Y%m%dT%H%M%SZ)
    mv "$PGDATA" "$aside"
    log "rejoin: fresh base backup because $reason; old data directory kept as $aside"
    clone_from_primary rejoin
  fi
  ;;
esac

log "starting postgres as $PG_ROLE on port $PORT"
trap - EXIT ERR
exec "$PG_BIN/postgres" -D "$PGDATA"
