#!/usr/bin/env bash
# apt-arch.sh ARCH STATE_DIR COMMAND ARGS...: runs apt-get or apt-cache
# against Debian's packages for ARCH (arm64 on an amd64 host), with package
# lists and cache of its own under STATE_DIR: the host's sources, never its
# configuration or its installed set. Lists are fetched on first use.
set -euo pipefail
arch=$1 state=$(realpath -m "$2") cmd=$3
shift 3
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
[ -f "$state/status" ] || : > "$state/status"
opts=(
  -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
  -o "Dir::State=$state" -o "Dir::State::Lists=$state/lists" -o "Dir::State::status=$state/status"
  -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root -qq
)
if ! ls "$state/lists" | grep -q _Packages; then
  apt-get "${opts[@]}" update >&2
fi
exec "$cmd" "${opts[@]}" "$@"
