#!/usr/bin/env bash
# Installs (only when missing) and starts the endpoint servers the connector
# tests use on 127.0.0.1: PostgreSQL 5432 (trust, db "test"), MariaDB 3306
# (root without password from 127.0.0.1, db "test"), NATS with JetStream
# 4222, RabbitMQ 5672 (guest/guest). Works without systemd (containers).
# Idempotent: what already runs is left alone. Run as root.
set -euo pipefail

log() { echo "services: $*"; }
die() { echo "services: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

# port_open PORT: something accepts TCP on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME CMD...: retry CMD for up to 60 s.
wait_for() {
  local name=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$name did not answer within 60s (last try: $*)"
}

# --- install what is missing -------------------------------------------------
declare -A want=(
  [/usr/bin/pg_ctlcluster]=postgresql
  [/usr/sbin/mariadbd]=mariadb-server
  [/usr/sbin/nats-server]=nats-server
  [/usr/sbin/rabbitmq-server]=rabbitmq-server
)
missing=()
for bin in "${!want[@]}"; do
  [ -x "$bin" ] || missing+=("${want[$bin]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not try to start their services through an init system
  # that is not there; we start them below.
  policy=/usr/sbin/policy-rc.d
  created_policy=
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created_policy=1; fi
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$created_policy" ] || rm -f $policy
fi

# --- PostgreSQL --------------------------------------------------------------
if ! port_open 5432; then
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  [ -n "$ver" ] || die "no cluster under /etc/postgresql"
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  # Trust on loopback for the tests (this machine is a test machine).
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nlocal all all trust' "$hba"
  fi
  log "starting postgresql $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
wait_for postgresql pg_isready -h 127.0.0.1 -p 5432
if ! psql -h 127.0.0.1 -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
  log "creating postgres database test"
  psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
fi

# --- MariaDB -----------------------------------------------------------------
if ! port_open 3306; then
  install -d -o mysql -g mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "initialising mariadb data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  log "starting mariadb"
  # --skip-name-resolve: otherwise a TCP client from 127.0.0.1 is named
  # "localhost" (reverse lookup through /etc/hosts) and matches Debian's
  # root@localhost, which only accepts unix_socket, instead of the
  # root@127.0.0.1 without password created below.
  # --pidfile: with --exec alone, start-stop-daemon takes any mariadbd it can
  # see in /proc for ours (e.g. the host's, when this runs in a network
  # namespace) and starts nothing.
  start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid \
    --exec /usr/sbin/mariadbd -- \
    --user=mysql --bind-address=127.0.0.1 --skip-name-resolve --pid-file=/run/mysqld/mysqld.pid
fi
wait_for mariadb mariadb-admin --protocol=socket -uroot ping
# root over TCP from 127.0.0.1 without password (Debian's root uses the unix socket).
mariadb --protocol=socket -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
SQL
wait_for "mariadb over tcp" mariadb -h 127.0.0.1 -P 3306 -uroot test -e 'SELECT 1'

# --- NATS with JetStream -----------------------------------------------------
if ! port_open 4222; then
  install -d /var/lib/nats-server
  log "starting nats-server"
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile /run/nats-server.pid \
    --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
fi
wait_for nats-server port_open 4222

# --- RabbitMQ ----------------------------------------------------------------
if ! port_open 5672; then
  log "starting rabbitmq-server"
  rabbitmq-server -detached
fi
wait_for rabbitmq rabbitmqctl await_startup
wait_for "rabbitmq amqp port" port_open 5672

log "postgresql, mariadb, nats, rabbitmq are up on 127.0.0.1"
