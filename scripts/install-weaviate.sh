#!/usr/bin/env bash
# Installs weaviate-server into .tools/bin, for the Weaviate tests
# (internal/weaviate, found through internal/weaviatetest) and for running
# Tollgate against a local Weaviate. It builds with `go install`, which
# takes a few minutes (about 3.5 on two cores) and makes a 170 MB binary;
# it changes nothing outside the repository's .tools folder.
#
# Idempotent: when the binary of the wanted version is there, it says so
# and exits at once, so it is safe to call before every test run.
#
#   scripts/install-weaviate.sh
#   WEAVIATE_VERSION=v1.35.2 scripts/install-weaviate.sh
set -euo pipefail

version="${WEAVIATE_VERSION:-v1.35.2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$root/.tools/bin"
bin="$bin_dir/weaviate-server"

say() { echo "install-weaviate: $*" >&2; }

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    say "unknown argument '$1' (usage: $0)"
    exit 2
    ;;
esac

# The version is read from the binary's build information, so a binary
# built by hand with the same command is kept too.
installed_version() {
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/weaviate/weaviate" { print $3 }'
}

if ! command -v go >/dev/null 2>&1; then
  say "go is not on PATH"
  exit 1
fi

if [[ -x "$bin" ]]; then
  have="$(installed_version "$bin")"
  if [[ "$have" == "$version" ]]; then
    say "weaviate-server $version is already in .tools/bin; nothing to do"
    exit 0
  fi
  say "replacing weaviate-server ${have:-of unknown version} with $version"
fi

mkdir -p "$bin_dir"
# Build into a temporary folder and move the binary in at the end, so that
# an interrupted build never leaves a half-written binary behind.
tmp="$(mktemp -d "$bin_dir/.install.XXXXXX")"
heartbeat=""
cleanup() {
  [[ -n "$heartbeat" ]] && kill "$heartbeat" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

start=$SECONDS
say "building weaviate-server $version into .tools/bin with go install (takes a few minutes)..."
# A line every 30 s, so that a CI log shows the build is alive.
( while sleep 30; do say "still building... $((SECONDS - start))s"; done ) &
heartbeat=$!

GOBIN="$tmp" go install -buildvcs=false "github.com/weaviate/weaviate/cmd/weaviate-server@$version"
mv -f "$tmp/weaviate-server" "$bin"
say "installed $bin ($version) in $((SECONDS - start))s"
