#!/usr/bin/env bash
# Make sure the local services the exchange and its tests use are up:
# PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379, starting them if
# they are down, and create the databases named on the command line if they are missing.
#   ops/local-services.sh fixexchange fixexchange_test
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL is not accepting connections on 127.0.0.1:5432"; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { log "Redis is not answering on 127.0.0.1:6379"; exit 1; }

PSQL=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
for db in "$@"; do
    if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
        log "creating database $db"
        "${PSQL[@]}" -c "CREATE DATABASE $db"
    fi
done
