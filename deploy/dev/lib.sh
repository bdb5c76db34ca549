# Shared settings and helpers of deploy/dev/up and deploy/dev/down. Sourced.

RUN=${RESIDENCY_DEV_DIR:-/tmp/residency-dev}
DEV_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$DEV_HERE/pom.xml")
KAFKA_LIBS="$DEV_HERE/.cache/kafka-$KAFKA_VERSION"

# The project's ports: fixed, on loopback, away from the services' defaults.
KAFKA_A_PORT=19092
KAFKA_A_CPORT=19093
KAFKA_B_PORT=29092
KAFKA_B_CPORT=29093
REDIS_PORT=16379
PG_PORT=15432

say() { echo "dev: $*" >&2; }
die() {
	echo "dev: error: $*" >&2
	exit 1
}

# as_root runs a command as root (directly, or through sudo).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# as_pg runs a PostgreSQL server command: PostgreSQL refuses to run as root, so
# root runs it as the postgres user.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_bin prints the newest PostgreSQL server bin directory, if any.
pg_bin() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
	return 0
}

# alive PIDFILE: is the process named in PIDFILE running?
alive() {
	[ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# port_free PORT: is nothing listening on 127.0.0.1:PORT?
port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
