#!/usr/bin/env bash
# ensure-redis.sh: make sure redis-server is installed (Debian's package) for
# the benchmark, without leaving the distro's own redis service running on
# 6379 (the benchmark starts its own pinned redis-server on a free port).
# Idempotent.
set -euo pipefail

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		echo "ensure-redis: not root and no sudo; install redis-server yourself" >&2
		exit 1
	fi
fi

stop_service() {
	# Installing the package may start the distro's service; stop it so it
	# does not hold 6379 or use the benchmark's CPUs.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		"${SUDO[@]}" systemctl stop redis-server >/dev/null 2>&1 || true
	fi
	if command -v service >/dev/null 2>&1; then
		"${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
	fi
}

if ! command -v redis-server >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	# apt-get update only if there are no package lists yet or the package
	# is unknown to them.
	if ! apt-cache show redis-server >/dev/null 2>&1; then
		"${SUDO[@]}" apt-get update
	fi
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; then
		# Stale lists (404 on a superseded version): refresh once and retry.
		"${SUDO[@]}" apt-get update
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
	fi
	stop_service
fi

redis-server --version
