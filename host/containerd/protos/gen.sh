#!/usr/bin/env bash
# Generates host/containerd/gen/containerd.{js,d.ts} from containerd's own
# .proto files: the API and cgroups modules pinned (and checked against
# go.sum) in this directory's go.mod, fetched through the Go module proxy,
# plus ttrpc's envelope (ttrpc.proto, written from ttrpc's PROTOCOL.md).
# Same modules, same protobufjs-cli: same bytes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"        # host/containerd/gen
inc="$2"        # an include tree under build/
pbjs="$3"
pbts="$4"

moddir() { (cd "$here" && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
api="$(moddir github.com/containerd/containerd/api)"
cgroups="$(moddir github.com/containerd/cgroups/v3)"
[ -n "$api" ] && [ -n "$cgroups" ] || { echo "gen.sh: cannot download the containerd modules" >&2; exit 1; }

rm -rf "$inc" && mkdir -p "$inc/github.com/containerd/containerd" "$inc/github.com/containerd/cgroups"
ln -s "$api" "$inc/github.com/containerd/containerd/api"
ln -s "$cgroups/cgroup2" "$inc/github.com/containerd/cgroups/cgroup2"

files=(
  github.com/containerd/containerd/api/runtime/task/v2/shim.proto
  github.com/containerd/containerd/api/events/task.proto
  github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto
  github.com/containerd/containerd/api/types/runtimeoptions/v1/api.proto
  github.com/containerd/containerd/api/services/images/v1/images.proto
  github.com/containerd/containerd/api/services/content/v1/content.proto
  github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto
  github.com/containerd/containerd/api/services/leases/v1/leases.proto
  github.com/containerd/cgroups/cgroup2/stats/metrics.proto
)
mkdir -p "$out"
"$pbjs" -t static-module -w es6 --force-number --no-verify --no-delimited --no-convert -p "$inc" -p "$here" \
  -o "$out/containerd.js" "${files[@]/#/$inc/}" "$here/ttrpc.proto"
"$pbts" --no-comments -o "$out/containerd.d.ts" "$out/containerd.js"
