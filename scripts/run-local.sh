#!/usr/bin/env bash
# The main job (make run): boot the fractal initramfs under QEMU (KVM when
# usable, TCG otherwise), talk to its agent without ssh over virtio-serial
# and TCP, then power it off.
set -euo pipefail
cd "$(dirname "$0")/.."
host=./build/fractal-host
name=fractal-run
export FRACTAL_STATE=${FRACTAL_STATE:-$PWD/build/state}
trap '$host stop $name >/dev/null 2>&1 || true' EXIT
echo "== booting $name"
$host boot --name $name --mem 1G --share "$PWD/build:build:ro" --detach
$host ls
echo "== the guest, through its agent"
$host exec --vm $name -- uname -a
$host version --vm $name
serial=$(sed -n 's/.*"serial": "\(serial:[^"]*\)".*/\1/p' "$FRACTAL_STATE/$name/vm.json")
tcp=$(sed -n 's/.*"tcp": "\(tcp:[^"]*\)".*/\1/p' "$FRACTAL_STATE/$name/vm.json")
echo "== ping over virtio-serial ($serial) and TCP ($tcp)"
$host --connect "$serial" ping
$host --connect "$tcp" ping
echo "== the host's build directory, shared over 9p"
$host exec --vm $name -- ls -l "$PWD/build/initramfs.cpio"
echo "== stdin, exit status"
echo "hello through fractal" | $host exec --vm $name -i -- sh -c 'read line; echo "the guest read: $line"'
set +e
$host exec --vm $name -- sh -c 'echo "exiting with 3"; exit 3'
echo "exit status: $?"
set -e
echo "== stopping"
$host stop $name
trap - EXIT
