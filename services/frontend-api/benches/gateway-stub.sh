#!/bin/bash
# The gateway against nginx with PostgreSQL out of the chain (docs/performance.md, "Seventh
# pass"): the upstream is a stub (an nginx worker answering `return 201`), so the p50 of each
# proxy is its own cost plus the wake-ups of the chain, without fsync's noise.
#
#   cargo build --release -p frontend-api
#   services/frontend-api/benches/gateway-stub.sh
#
# FA: the proxy binary to compare with nginx (default target/release/frontend-api; any binary
# that reads LISTEN_ADDR and DATA_INGEST_URL, e.g. target/release/examples/proxy_floor).
# FRONTEND_ENV="K=V ...": more variables for it. ROUNDS (8) rounds of SECS (3) seconds per
# wrk run, one connection, the two proxies alternating which goes first.
# WRKPFX, STUBPFX, PROXPFX: a command prefix for wrk, the stub and both proxies, e.g.
# "taskset -c 0" to put everything on one CPU (no cross-CPU wake-ups).
# PORT (18101): the stub's port; nginx's is PORT+1, the proxy's PORT+2.
# Needs wrk and nginx (./dev bench installs them), run as root (nginx's `user root`).
set -eu
FA=${FA:-target/release/frontend-api}
ROUNDS=${ROUNDS:-8}
SECS=${SECS:-3}
PORT=${PORT:-18101}
STUB=$PORT NGINX=$((PORT + 1)) FRONT=$((PORT + 2))
D=$(mktemp -d /tmp/gateway-stub.XXXX)
mkconf() { # name port server-block
  cat >"$D/$1.conf" <<C
user root; worker_processes 1; error_log $D/$1.err warn; pid $D/$1.pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $D/b$1; proxy_temp_path $D/p$1;
 fastcgi_temp_path $D/f$1; uwsgi_temp_path $D/u$1; scgi_temp_path $D/s$1;
 upstream up { server 127.0.0.1:$STUB; keepalive 16; }
 server { listen 127.0.0.1:$2; $3 } }
C
}
mkconf stub "$STUB" 'location / { default_type application/json; return 201 "{\"id\":1,\"status\":\"accepted\"}"; }'
mkconf proxy "$NGINX" 'location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }'
${STUBPFX:-} nginx -p "$D" -c "$D/stub.conf" -g 'daemon off;' &
S=$!
${PROXPFX:-} nginx -p "$D" -c "$D/proxy.conf" -g 'daemon off;' &
P=$!
# shellcheck disable=SC2086 # FRONTEND_ENV and the prefixes are word lists
LISTEN_ADDR=127.0.0.1:$FRONT DATA_INGEST_URL=http://127.0.0.1:$STUB BUSINESS_LOGIC_URL=http://127.0.0.1:9 \
  DATABASE_URL=postgres://x:y@127.0.0.1:9/appdb SHUTDOWN_DRAIN_MS=0 ${PROXPFX:-} env ${FRONTEND_ENV:-} "$FA" >/dev/null 2>&1 &
F=$!
trap 'kill $S $P $F 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
cat >"$D/post.lua" <<'L'
wrk.method = "POST"
wrk.body = '{"source":"sensor-1","data_type":"temperature","payload":{"value":21.5}}'
wrk.headers["Content-Type"] = "application/json"
L
direct=http://127.0.0.1:$STUB/api/v1/ingest
via_nginx=http://127.0.0.1:$NGINX/api/v1/ingest
via_front=http://127.0.0.1:$FRONT/api/v1/data/ingest
# Ready: poll with a deadline.
for _ in $(seq 100); do
  curl -fs -m 1 -XPOST -H 'content-type: application/json' -d '{"a":1}' "$via_front" >/dev/null && break
  sleep 0.1
done
curl -fs -m 2 -XPOST -H 'content-type: application/json' -d '{"a":1}' "$via_front" >/dev/null ||
  { echo "the proxy at $via_front does not answer" >&2; exit 1; }
p50() { # the p50 of one wrk run, in µs
  ${WRKPFX:-} wrk -t1 -c1 -d"${SECS}s" --latency -s "$D/post.lua" "$1" |
    awk '$1=="50%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000}}'
}
for u in "$direct" "$via_nginx" "$via_front"; do wrk -t1 -c1 -d1s -s "$D/post.lua" "$u" >/dev/null; done
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 0 ]; then
    n=$(p50 "$via_nginx"); f=$(p50 "$via_front")
  else
    f=$(p50 "$via_front"); n=$(p50 "$via_nginx")
  fi
  d=$(p50 "$direct")
  echo "round $r: p50 direct $d µs, through nginx $n µs, through $(basename "$FA") $f µs; minus nginx: $(echo "$f - $n" | bc) µs"
done
