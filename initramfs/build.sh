#!/usr/bin/env bash
# Builds the guest initramfs with u-root (pinned in go.mod, run as a Go tool):
# u-root's init, the core commands an operator needs, our agent as uinit,
# crun with its libraries (u-root adds every binary's ldd dependencies), and
# the kernel modules resolved by modules.ts. u-root writes a reproducible
# newc archive (fixed mtimes, sorted entries), so two clean builds are
# byte-identical.
#
# usage: build.sh OUT.cpio AGENT MODULES_OUT_DIR
# AGENT_OUTSIDE=1 leaves the agent itself out (VMs attach it as a read-only
# erofs disk, agent-image.sh; append-agent.sh makes the self-contained
# archive from this one) but keeps the libraries it needs.
# AUTHORIZED_KEYS=FILE bakes keys allowed on the agent's network listeners
# in (/etc/fractal/authorized_keys, like cpud's key.pub); TLS_CERT and
# TLS_KEY bake in an identity for tls:// and wss:// listeners.
# EXTRA_FILES="SRC:DEST ..." adds more (bench-peers adds dropbear).
# GOARCH=arm64 FOREIGN_ROOT=DIR builds for another architecture: Go cross-
# compiles u-root and the helper, crun comes from DIR (foreign-root.sh) and
# the libraries of crun and the agent are read from their ELF headers
# (needed-libs.sh), since u-root's ldd cannot run foreign binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "$1")
agent=$(realpath "$2")
mods=$(realpath "$3")
foreign=${FOREIGN_ROOT:+$(realpath "$FOREIGN_ROOT")}
if [ -n "$foreign" ]; then crun=$foreign/usr/bin/crun; else crun=${CRUN:-$(command -v crun || true)}; fi
[ -x "$crun" ] || { echo "build.sh: crun not found (apt-get install crun, or CRUN=/path/to/crun)" >&2; exit 1; }
extra=()
for pair in "${AUTHORIZED_KEYS:-}:etc/fractal/authorized_keys" "${TLS_CERT:-}:etc/fractal/tls.crt" "${TLS_KEY:-}:etc/fractal/tls.key"; do
  src=${pair%%:*}
  [ -n "$src" ] || continue
  [ -r "$src" ] || { echo "build.sh: cannot read $src" >&2; exit 1; }
  extra+=(-files "$(realpath "$src"):${pair#*:}")
done
for pair in ${EXTRA_FILES:-}; do
  extra+=(-files "$pair")
done
if [ -n "$foreign" ]; then
  extra+=(-skip-ldd)
  for pair in $("$here/needed-libs.sh" "$foreign" "$agent" "$crun"); do extra+=(-files "$pair"); done
elif [ -n "${AGENT_OUTSIDE:-}" ]; then
  # u-root's ldd sees only what goes into the archive: name the agent's
  # libraries here, less crun's, which u-root adds itself (and refuses twice).
  crun_libs=$("$here/needed-libs.sh" / "$crun" | sed 's/^.*://')
  for pair in $("$here/needed-libs.sh" / "$agent"); do
    grep -qxF "${pair#*:}" <<<"$crun_libs" || extra+=(-files "$pair")
  done
fi
if [ -z "${AGENT_OUTSIDE:-}" ]; then extra+=(-files "$agent:bin/fractal-agent"); fi
cd "$here"
# Every tool in go.mod except u-root itself is a command for the image.
cmds=$(awk '/^tool \(/ {t=1; next} t && /^\)/ {t=0} t && $1 != "github.com/u-root/u-root" {print $1}' go.mod)
# A busybox runs the package inits of every command in it, whichever one
# it starts (Go runs all of a binary's inits before main). Under TCG the
# commands below made each of the others pay ~40 ms at every start (zstd's
# CRC table alone ~19 ms, for insmod's compressed modules; the line editor
# and shell of gosh; dhclient's DHCP stack), so they are built as binaries
# of their own: `true` from the busybox starts in ~45 ms instead of ~80.
# u-root's init is among them, so the first program of a boot starts light
# too. wget and netcat (an HTTP stack, ~13 ms) stay in: 10 MB more archive
# for the rest was not worth it.
own="init insmod rmmod gosh dhclient"
bb=() bin=()
for c in $cmds; do
  if [[ " $own " == *" ${c##*/} "* ]]; then bin+=("$c"); else bb+=("$c"); fi
done
export GOFLAGS=-mod=mod
# The namespace helper (exec --namespace): static, single purpose, ours.
helper=$(dirname "$out")/fractal-ns
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$helper" ./nshelper
# u-root itself runs here, so it is built for this host; GOARCH, when set,
# is what it builds the image's commands for.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
env -u GOARCH go build -o "$tools/u-root" github.com/u-root/u-root
# u-root takes commands built as binaries from a config template only.
{
  echo "configs:"
  echo "  fractal:"
  echo "    commands:"
  echo "      - builder: binary"
  echo "        commands: [$(IFS=,; echo "${bin[*]}")]"
} >"$tools/mkuimage.yaml"
"$tools/u-root" -o "$out.tmp" \
  -config-file "$tools/mkuimage.yaml" -config fractal \
  -uinitcmd="/bin/fractal-ns -supervise -- /bin/fractal-agent --init" \
  -files "$crun:bin/crun" \
  -files "$helper:bin/fractal-ns" \
  -files "$mods:lib/modules" \
  "${extra[@]}" \
  "${bb[@]}" 2>&1 | grep -v -E "WARN|Some packages may not compile|golang.org/doc/install|golang.org/dl" || true
[ -s "$out.tmp" ] || { echo "build.sh: u-root produced no archive" >&2; exit 1; }
mv "$out.tmp" "$out"
