#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 and the test role exists.
# ppos_test owns the test databases and runs their migrations, which create the
# services' roles and the logins the test planes connect as (CREATEROLE, and
# pg_signal_backend to drop a database its planes are still connected to;
# never a superuser, as an owner in production need not be).
# Uses a running server when there is one, starts the installed cluster when
# there is none, and fails loudly when neither works: tests never skip it.
set -euo pipefail
host=${PPOS_PG_HOST:-127.0.0.1}
port=${PPOS_PG_PORT:-5432}
role=ppos_test

ready() { pg_isready -h "$host" -p "$port" -q 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: installing PostgreSQL from Debian packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "ensure-postgres: no PostgreSQL installed and no apt-get to install it" >&2
    exit 1
  fi
fi

if ! ready; then
  echo "ensure-postgres: no server on $host:$port; starting the installed cluster" >&2
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
if ! ready; then
  echo "ensure-postgres: PostgreSQL is not reachable on $host:$port" >&2
  exit 1
fi

admin() {
  psql -h "$host" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAtc "$1" 2>/dev/null \
    || su postgres -c "psql -d postgres -v ON_ERROR_STOP=1 -qAtc \"$1\""
}
admin "DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role LOGIN CREATEDB CREATEROLE PASSWORD '$role';
  END IF;
END\$\$;" >/dev/null
admin "ALTER ROLE $role CREATEROLE" >/dev/null
# Dropping a test database (WITH FORCE) ends the sessions of the runtime logins too.
admin "GRANT pg_signal_backend TO $role" >/dev/null
if [ "$(admin "SELECT 1 FROM pg_database WHERE datname = '$role'")" != "1" ]; then
  admin "CREATE DATABASE $role OWNER $role" >/dev/null
fi
echo "ensure-postgres: ready (postgresql+psycopg://$role:***@$host:$port/$role)" >&2
