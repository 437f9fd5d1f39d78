#!/usr/bin/env bash
# Installs Chromium for the browser test (internal/e2e/browser_test.go),
# with apt-get, if /usr/bin/chromium is missing.
#
# It only installs when CI=true or when asked with --yes, so a developer's
# `make test` never changes their machine behind their back; otherwise it
# says what it would do and exits 0 (the browser test then skips, with a
# message, unless CI=true). It is idempotent: a second run does nothing.
#
#   scripts/install-chromium.sh          # install only if CI=true
#   scripts/install-chromium.sh --yes    # install here and now
set -euo pipefail

readonly chromium=/usr/bin/chromium

say() { echo "install-chromium: $*"; }

asked=false
case "${1:-}" in
  --yes | -y) asked=true ;;
  "") ;;
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    say "unknown argument '$1' (usage: $0 [--yes])" >&2
    exit 2
    ;;
esac

if [[ -x "$chromium" ]]; then
  say "$chromium is already installed ($("$chromium" --version 2>/dev/null || echo 'version unknown')); nothing to do"
  exit 0
fi

if [[ "${CI:-}" != "true" && "$asked" != "true" ]]; then
  say "$chromium is missing; not installing it because CI is not 'true'."
  say "run '$0 --yes' to install it (apt-get install chromium, about 500 MB); until then the browser test is skipped."
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  say "apt-get not found: install Chromium at $chromium with this system's package manager" >&2
  exit 1
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    say "not root and no sudo: cannot run apt-get" >&2
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
"${sudo[@]}" apt-get update
say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y chromium"
"${sudo[@]}" apt-get install -y chromium

if [[ ! -x "$chromium" ]]; then
  say "apt-get finished but $chromium is still missing" >&2
  exit 1
fi
say "installed $("$chromium" --version 2>/dev/null || echo "$chromium")"
