# drdctl practice: the container command of the practice copy's PostgreSQL (StatefulSet
# `postgresql` in a drdctl-practice-<id> namespace; run as `bash -c`).
#
# First start (empty volume): a base backup of the DR standby (pg_basebackup, WAL streamed
# with it, no replication slot: nothing is left behind on the standby). The settings copied
# with it point at the real primary; they are removed, so the copy follows no one: it starts
# as a standby of nothing, replays the WAL it came with, and stays at that moment (its
# pg_last_xact_replay_timestamp is the data's freshness) until drdctl promotes it with
# pg_promote(). It never connects to another server after the backup.
set -Eeuo pipefail
umask 077
log() { printf '%s practice: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
PGDATA=${PGDATA%/}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PARENT_DIR=$(dirname "$PGDATA")
SOCKET_DIR=${SOCKET_DIR:-$PARENT_DIR}
LISTEN_ADDRESS=${LISTEN_ADDRESS:-*}
PORT=${PORT:-5432}
REPLICATION_USER=${REPLICATION_USER:-replicator}
SOURCE_PORT=${SOURCE_PORT:-5432}
REPLICATION_PASSWORD=${REPLICATION_PASSWORD:-${POSTGRES_PASSWORD:-${APP_PASSWORD:-}}}
[[ -n ${SOURCE_HOST:-} ]] || { log "FATAL: SOURCE_HOST (the DR standby to copy) is not set"; exit 1; }
[[ $(id -u) != 0 ]] || { log "FATAL: PostgreSQL must not run as root"; exit 1; }
mkdir -p "$SOCKET_DIR"

if [[ ! -f $PGDATA/PG_VERSION ]]; then
  tmp=$PGDATA.clone-tmp
  rm -rf "$tmp"
  log "pg_basebackup from the DR standby $SOURCE_HOST:$SOURCE_PORT"
  t0=$SECONDS
  # In the background, so that a stop (SIGTERM/SIGINT to this PID 1) ends the backup at once.
  # The whole process group: pg_basebackup streams WAL from a child process of its own, which
  # would otherwise go on streaming (holding a temporary slot on the standby) without it.
  PGPASSWORD=$REPLICATION_PASSWORD PGAPPNAME=drdctl-practice "$PG_BIN/pg_basebackup" \
    -D "$tmp" -h "$SOURCE_HOST" -p "$SOURCE_PORT" -U "$REPLICATION_USER" \
    -X stream --checkpoint=fast --no-password >&2 &
  backup=$!
  trap 'trap "" TERM INT; kill -TERM 0 2>/dev/null; wait; rm -rf "$tmp"; log "stopped during the base backup"; exit 143' TERM INT
  wait "$backup"
  trap - TERM INT
  sed -i -E '/^[[:space:]]*(primary_conninfo|primary_slot_name|restore_command|archive_command)[[:space:]]*=/d' \
    "$tmp/postgresql.auto.conf"
  rm -f "$tmp/recovery.signal"
  touch "$tmp/standby.signal"
  if [[ -d $PGDATA ]]; then rmdir "$PGDATA"; fi
  mv "$tmp" "$PGDATA"
  log "base backup done in $((SECONDS - t0))s: $(du -sb "$PGDATA" | cut -f1) bytes; the copy follows no one"
fi
log "starting postgres on port $PORT (a standby of nothing until drdctl promotes it)"
exec "$PG_BIN/postgres" -D "$PGDATA" -c listen_addresses="$LISTEN_ADDRESS" -c port="$PORT" \
  -c unix_socket_directories="$SOCKET_DIR"
