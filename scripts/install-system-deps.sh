#!/usr/bin/env bash
# System packages dnx needs on Debian/Ubuntu: libb64 for perf_analyzer (tritonclient 2.50),
# docker-compose (client only) to lint docker/docker-compose.yml.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d' || need+=(libb64-0d)
command -v docker-compose >/dev/null || need+=(docker-compose)  # lints docker/docker-compose.yml in tests
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "dnx: please install ${need[*]} (libb64) with your package manager" >&2; exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
