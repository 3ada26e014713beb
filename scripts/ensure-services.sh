#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis the scale-out tests use are running, starting them
# with this machine's commands if they are installed but stopped. Never fails: tests that need
# a missing service skip and say why.
set -uo pipefail

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "==> starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null; then
        echo "==> starting Redis"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    fi
fi
pg_isready -q -h 127.0.0.1 2>/dev/null && echo "==> PostgreSQL is up" || echo "==> no PostgreSQL: its tests will skip"
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && echo "==> Redis is up" || echo "==> no Redis: its tests will skip"
exit 0
