#!/usr/bin/env bash
# A throwaway PostgreSQL for local trials and the tests: Debian's server (postgresql-15)
# initialised in a temporary directory, listening only on a unix socket there, run as an
# unprivileged user (as root: the `postgres` user, through runuser, since initdb refuses
# root). Prints the database URL on stdout, e.g.
#
#   postgresql:///plb?host=/tmp/plb-pg.Ab12Cd&user=plb
#
# for `plb balancer --db URL` (PLB_DB), then keeps the server until its standard input
# ends (Enter, or the closing of a pipe: the test harness, testkit::PgServer, holds it)
# or it gets SIGINT/SIGTERM, and then stops the server and removes the directory.
#
# Settings for throwaway data: trust authentication on the socket only, fsync off (a
# commit survives the server's processes dying, not the machine's). PG_BIN overrides the
# server's bin directory; PG_PORT also listens on 127.0.0.1:PG_PORT and prints a TCP URL.
set -euo pipefail

bin="${PG_BIN:-}"
if [ -z "$bin" ]; then
    for v in 15 16 17 14 13; do
        if [ -x "/usr/lib/postgresql/$v/bin/postgres" ]; then
            bin="/usr/lib/postgresql/$v/bin"
            break
        fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
    echo "pg-temp: no PostgreSQL server found (apt-get install postgresql-15, or set PG_BIN)" >&2
    exit 1
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/plb-pg.XXXXXX")"
chmod 755 "$dir"
run=()
if [ "$(id -u)" = 0 ]; then
    user="${PG_USER:-postgres}"
    if ! id "$user" >/dev/null 2>&1; then
        echo "pg-temp: running as root needs an unprivileged user \`$user\` to run the server" >&2
        rm -rf "$dir"
        exit 1
    fi
    chown "$user" "$dir"
    run=(runuser -u "$user" --)
fi
# The server's user may not be able to enter the caller's directory (/root).
cd "$dir"

started=0
stop() {
    trap - EXIT INT TERM
    if [ "$started" = 1 ]; then
        "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 0' INT TERM

if ! "${run[@]}" "$bin/initdb" -D "$dir/data" -U plb -A trust -E UTF8 --locale=C -N \
    >"$dir/initdb.log" 2>&1; then
    echo "pg-temp: initdb failed:" >&2
    tail -n 20 "$dir/initdb.log" >&2
    exit 1
fi

listen="''"
tcp=""
if [ -n "${PG_PORT:-}" ]; then
    listen="127.0.0.1"
    tcp="postgresql://plb@127.0.0.1:${PG_PORT}/plb"
fi
opts="-k $dir -p ${PG_PORT:-5432} -c listen_addresses=$listen -c fsync=off"
opts+=" -c full_page_writes=off -c max_connections=300 -c shared_buffers=128MB"
if ! "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" start \
    >/dev/null 2>&1; then
    echo "pg-temp: the server did not start:" >&2
    tail -n 20 "$dir/server.log" >&2
    exit 1
fi
started=1
"${run[@]}" "$bin/createdb" -h "$dir" -p "${PG_PORT:-5432}" -U plb plb

if [ -n "$tcp" ]; then
    echo "$tcp"
else
    echo "postgresql:///plb?host=$dir&port=${PG_PORT:-5432}&user=plb"
fi
if [ -t 0 ]; then
    echo "pg-temp: PostgreSQL in $dir; press Enter or Ctrl-C to stop it and remove it" >&2
else
    # Whoever reads our output may be gone when we stop (a test binary exiting).
    exec >/dev/null 2>&1
fi
read -r _ || true
