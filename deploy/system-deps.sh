#!/usr/bin/env bash
# System packages ecg-intake needs: `demo` (poppler for PDFs, venv support) or `test` (also the Redis
# and PostgreSQL servers the test suite starts, and Chromium for the review UI's browser tests). Installs
# them with apt-get as root or through sudo; otherwise stops before anything else runs and prints the exact
# command.
set -euo pipefail
purpose="${1:-demo}"

need=()
command -v pdftoppm >/dev/null && command -v pdfinfo >/dev/null || need+=(poppler-utils)
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
if [ "$purpose" = test ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
  command -v runuser >/dev/null || need+=(util-linux)
  command -v chromium >/dev/null || need+=(chromium)  # the review UI's browser tests (Playwright)
  command -v systemd-analyze >/dev/null || need+=(systemd)  # verifies deploy/systemd/ (no init is started)
fi
[ ${#need[@]} -eq 0 ] && exit 0

install="apt-get update && apt-get install -y ${need[*]}"
if ! command -v apt-get >/dev/null; then
  echo "ecg-intake needs these system packages (Debian names): ${need[*]}" >&2
  echo "install them with your system's package manager, then run make again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  echo "installing system packages through sudo: ${need[*]}"
  sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
else
  echo "missing system packages: ${need[*]}" >&2
  echo "run this as root, then run make again:" >&2
  echo "  sudo sh -c '$install'" >&2
  exit 1
fi
