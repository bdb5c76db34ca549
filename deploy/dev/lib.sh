# Shared settings and helpers of deploy/dev/up, down and selftest. Sourced.

say() { echo "dev: $*" >&2; }
die() {
	echo "dev: error: $*" >&2
	exit 1
}

# The state dir: absolute, without a trailing slash, so that the marker every
# service carries (below) names it one way only.
RUN=$(realpath -m -- "${RESIDENCY_DEV_DIR:-/tmp/residency-dev}")
[[ $RUN != *[[:space:]]* ]] || die "RESIDENCY_DEV_DIR=$RUN: no spaces, please (the services' markers are words)"
case "$RUN" in
/ | /tmp | /root | /home | "$HOME") die "RESIDENCY_DEV_DIR=$RUN: pick a directory of its own (down removes it)" ;;
esac
DEV_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEV_CACHE="$DEV_HERE/.cache"
pom_property() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$DEV_HERE/pom.xml"; }
KAFKA_VERSION=$(pom_property kafka.version)
KAFKA_LIBS="$DEV_CACHE/kafka-$KAFKA_VERSION"
APICURIO_VERSION=$(pom_property apicurio.version)
APICURIO_HOME="$DEV_CACHE/apicurio-registry-$APICURIO_VERSION"
# The S3 server's Python packages (pinned in s3-requirements.txt) live in a
# venv named after that file's content, so a change to it makes a new one.
S3_VENV="$DEV_CACHE/s3-venv-$(sha256sum "$DEV_HERE/s3-requirements.txt" | cut -c1-12)"

# The project's ports: on loopback, away from the services' defaults, all
# moved by RESIDENCY_DEV_PORT_OFFSET so that a second stack (another state dir)
# can run beside the first.
PORT_OFFSET=${RESIDENCY_DEV_PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]{1,5}$ ]] && ((PORT_OFFSET <= 30000)) ||
	die "RESIDENCY_DEV_PORT_OFFSET=$PORT_OFFSET: want a whole number from 0 to 30000"
KAFKA_A_PORT=$((19092 + PORT_OFFSET))
KAFKA_A_CPORT=$((19093 + PORT_OFFSET))
KAFKA_B_PORT=$((29092 + PORT_OFFSET))
KAFKA_B_CPORT=$((29093 + PORT_OFFSET))
REDIS_PORT=$((16379 + PORT_OFFSET))
REDIS_AUTH_PORT=$((16380 + PORT_OFFSET))
REDIS_TLS_PORT=$((16381 + PORT_OFFSET))
REDIS_MTLS_PORT=$((16382 + PORT_OFFSET))
PG_PORT=$((15432 + PORT_OFFSET))
S3_PORT=$((19000 + PORT_OFFSET))
REGISTRY_PORT=$((18081 + PORT_OFFSET))
ALL_PORTS=("$KAFKA_A_PORT" "$KAFKA_A_CPORT" "$KAFKA_B_PORT" "$KAFKA_B_CPORT"
	"$REDIS_PORT" "$REDIS_AUTH_PORT" "$REDIS_TLS_PORT" "$REDIS_MTLS_PORT"
	"$PG_PORT" "$S3_PORT" "$REGISTRY_PORT")

# The services of a stack, each a directory of the state dir.
SERVICES=(kafka-a kafka-b redis redis-auth redis-tls redis-mtls postgres s3 registry)

# The S3 server's credentials and region: moto accepts any; these are the
# ones the tests sign with.
S3_REGION=us-east-1
S3_ACCESS_KEY_ID=residency-dev
S3_SECRET_ACCESS_KEY=residency-dev-secret

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

# Every service process up starts carries a marker on its command line,
# residency.dev=$RUN/SERVICE, where ps shows it: a JVM as the system property
# -Dresidency.dev=..., Redis in its process title (proc-title-template),
# Python as the -X option -Dresidency.dev=..., PostgreSQL's postmaster as the
# placeholder setting --residency.dev=... (its backends are its children and
# end with it). down uses the marker to find what lost its pid file, and only
# ever what is marked with its own state dir.

# marked prints "PID MARKER" for every process that carries a dev-stack
# marker, whichever stack started it (stacks before the marker named the state
# dir marked their brokers with a bare -Dresidency.dev=kafka-a: such markers
# belong to no state dir here and are never matched).
marked() {
	grep -aosH 'residency\.dev=[^[:space:][:cntrl:]]*' /proc/[0-9]*/cmdline |
		sed -n 's:^/proc/\([0-9]*\)/cmdline\:residency\.dev=\(.*\)$:\1 \2:p' | sort -u
}

# marker_of PID: the marker of a process (its service directory), if any.
marker_of() {
	grep -aos 'residency\.dev=[^[:space:][:cntrl:]]*' "/proc/$1/cmdline" | head -1 | sed 's/^residency\.dev=//'
}

# stack_pids [SERVICE]: the pids of this state dir's processes (of one
# service, or all), found by their markers alone.
stack_pids() {
	local pid m
	marked | while read -r pid m; do
		[ "${m%/*}" = "$RUN" ] || continue
		[ -z "${1:-}" ] || [ "${m##*/}" = "$1" ] || continue
		echo "$pid"
	done | sort -un
}
