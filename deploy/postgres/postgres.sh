#!/usr/bin/env bash
# A private PostgreSQL cluster for remsguard's tests, on 127.0.0.1 only.
#
#   bash deploy/postgres/postgres.sh start    # prints a SQLAlchemy URL as the last line of stdout
#   bash deploy/postgres/postgres.sh stop
#   bash deploy/postgres/postgres.sh status   # exit 0 when running, 3 when stopped
#
# Installs Debian's `postgresql` package when no server binaries are found under
# /usr/lib/postgresql/*/bin. The cluster is our own (not Debian's `main` cluster on 5432).
#
# Environment:
#   REMSGUARD_PG_HOME      cluster dir (data, socket, log); default ~/.cache/remsguard/postgres,
#                          or /var/lib/remsguard/postgres when run as root (the `postgres` OS user,
#                          which runs the server because initdb refuses root, cannot enter /root)
#   REMSGUARD_PG_PORT      TCP port, default 55432
#   REMSGUARD_PG_USER      role created for the tests, default remsguard
#   REMSGUARD_PG_PASSWORD  its password, default remsguard (the server listens on 127.0.0.1 only)
#   REMSGUARD_PG_DATABASE  database created for the tests, default remsguard_test
# Everything but the URL goes to stderr.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
  PG_HOME="${REMSGUARD_PG_HOME:-/var/lib/remsguard/postgres}"
else
  PG_HOME="${REMSGUARD_PG_HOME:-$HOME/.cache/remsguard/postgres}"
fi
PORT="${REMSGUARD_PG_PORT:-55432}"
DB_USER="${REMSGUARD_PG_USER:-remsguard}"
DB_PASS="${REMSGUARD_PG_PASSWORD:-remsguard}"
DB_NAME="${REMSGUARD_PG_DATABASE:-remsguard_test}"
DATA="$PG_HOME/data"
RUN="$PG_HOME/run"
LOGFILE="$PG_HOME/postgres.log"
URL="postgresql+psycopg://$DB_USER:$DB_PASS@127.0.0.1:$PORT/$DB_NAME"

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && [ -x "$d/psql" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

install_postgres() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      die "PostgreSQL is not installed and this user cannot install it: run 'apt-get install -y postgresql' as root"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is missing: install PostgreSQL by hand"
  log "PostgreSQL server not found: installing Debian's postgresql package"
  local t0=$SECONDS
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >&2
  # The package may create and start Debian's own `main` cluster on 5432; we do not use it.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
      if [ "$name" = "main" ] && [ "$status" = "online" ]; then
        log "stopping Debian's default cluster $ver/main (not used by remsguard)"
        $sudo pg_ctlcluster "$ver" main stop >&2 || true
      fi
    done
  fi
  log "installed PostgreSQL in $((SECONDS - t0))s"
}

BIN="$(find_bindir || true)"

# Run a command as the OS user that owns the cluster.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

is_running() { [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

superuser_psql() {
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres "$@"
}

ensure_role_and_db() {
  # Names are plain identifiers we chose; the password is quoted as an SQL literal.
  local pass_sql="${DB_PASS//\'/\'\'}"
  superuser_psql >&2 <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE "$DB_USER" LOGIN CREATEDB PASSWORD '$pass_sql';
  ELSE
    ALTER ROLE "$DB_USER" LOGIN CREATEDB PASSWORD '$pass_sql';
  END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER %I', '$DB_NAME', '$DB_USER')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
EOF
}

do_start() {
  if [ -z "$BIN" ]; then
    install_postgres
    BIN="$(find_bindir)" || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin after install"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chown postgres: "$PG_HOME"
  fi

  if is_running; then
    local running_port
    running_port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
    if [ "$running_port" != "$PORT" ]; then
      die "already running from $DATA on port $running_port, not $PORT; stop it first"
    fi
    log "already running at 127.0.0.1:$PORT (data $DATA)"
    ensure_role_and_db
    echo "$URL"
    return 0
  fi
  if port_in_use "$PORT"; then
    die "port $PORT is taken by another process; set REMSGUARD_PG_PORT to a free port"
  fi

  as_owner mkdir -p "$RUN"
  as_owner chmod 700 "$RUN"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb $DATA ($("$BIN/postgres" --version))"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >&2
    echo "include_if_exists = 'remsguard.conf'" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
  fi
  local data_major bin_major
  data_major="$(cat "$DATA/PG_VERSION")"
  bin_major="$("$BIN/postgres" --version | grep -oE '[0-9]+' | head -n 1)"
  if [ "$data_major" != "$bin_major" ]; then
    die "$DATA was made by PostgreSQL $data_major but the server here is $bin_major: remove $PG_HOME"
  fi
  # Rewritten on every start, so REMSGUARD_PG_PORT applies. A throw-away test cluster:
  # durability traded for speed (no fsync).
  as_owner tee "$DATA/remsguard.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
EOF

  log "starting PostgreSQL on 127.0.0.1:$PORT (data $DATA)"
  if ! as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t 60 >&2 9>&-; then
    log "PostgreSQL did not start; last lines of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2 || true
    exit 1
  fi
  ensure_role_and_db
  # Ready means: our role logs in over TCP with its password and sees its database.
  local deadline=$((SECONDS + 30))
  until PGPASSWORD="$DB_PASS" PGCONNECT_TIMEOUT=5 "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" \
          -U "$DB_USER" -d "$DB_NAME" -c 'SELECT 1' >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "cannot log in as $DB_USER over TCP; last lines of $LOGFILE:"
      tail -n 40 "$LOGFILE" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "ready"
  echo "$URL"
}

do_stop() {
  if ! is_running; then
    log "not running"
    return 0
  fi
  log "stopping PostgreSQL (data $DATA)"
  if ! as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >&2; then
    log "fast shutdown timed out; using immediate"
    as_owner "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >&2 || true
  fi
  log "stopped"
}

do_status() {
  if is_running; then
    echo "running at 127.0.0.1:$PORT (data $DATA)"
    return 0
  fi
  echo "stopped"
  return 3
}

cmd="${1:-}"
case "$cmd" in
  start|stop)
    mkdir -p "$PG_HOME"
    exec 9>"$PG_HOME/.lock"
    flock -w 300 9 || die "could not lock $PG_HOME/.lock"
    "do_$cmd"
    ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
