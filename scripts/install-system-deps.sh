#!/usr/bin/env bash
# System packages dnx needs on Debian/Ubuntu: libb64 for perf_analyzer (tritonclient 2.50);
# prometheus (with promtool) for the monitoring tests, only where apt exists (elsewhere those
# tests skip, saying why; the package's own service is not needed: tests start their own).
# docker-compose only where a Docker engine answers `docker info` and no compose client exists:
# on a machine without an engine it would pull containerd and runc for nothing (the tests lint
# docker/docker-compose.yml with Python instead).
# DRY_RUN=1 prints the apt packages it would install ("apt: a b", or "apt: (none)") and stops.
set -euo pipefail
need=()
# Not `ldconfig -p | grep -q`: with pipefail, grep -q quitting at the first match can kill
# ldconfig with SIGPIPE, and the pipeline then reads as "not found" (seen once in the suite).
grep -q 'libb64\.so\.0d' <<<"$(ldconfig -p 2>/dev/null || true)" || need+=(libb64-0d)
if command -v apt-get >/dev/null && ! command -v promtool >/dev/null; then
  need+=(prometheus)
fi
if docker info >/dev/null 2>&1; then
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
fi
if [ -n "${DRY_RUN:-}" ]; then
  echo "apt: ${need[*]:-(none)}"; exit 0
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "dnx: please install ${need[*]} with your package manager" >&2; exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
