#!/usr/bin/env bash
# The main job (make run): boot the fractal initramfs under QEMU (KVM when
# usable, TCG otherwise), talk to its agent without ssh over virtio-serial
# and TCP, run several containers at once from the built-in busybox image
# (its layer unpacked once, shared by all of them), then power it off.
set -euo pipefail
cd "$(dirname "$0")/.."
host=./build/fractal-host
name=fractal-run
export FRACTAL_STATE=${FRACTAL_STATE:-$PWD/build/state}
trap '$host vm stop $name >/dev/null 2>&1 || true' EXIT
echo "== booting $name"
$host boot --name $name --mem 1G --share "$PWD/build:build:ro" --images "$PWD/build/images" --detach
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
echo "== containers: the image store, then three at once from busybox"
$host images --vm $name
for i in 1 2 3; do
  $host run --vm $name -d --name web$i busybox sh -c "echo container $i on \$(hostname) > /tmp/id; exec sleep 600" >/dev/null
done
$host ps --vm $name
for i in 1 2 3; do $host exec --vm $name web$i cat /tmp/id; done
echo "== their root file systems: one shared lower layer, an upper layer each"
$host exec --vm $name -- cat /proc/mounts |
  awk '$1 == "overlay" && $2 ~ /^\/run\/fractal\/containers\// {
    split($2, p, "/"); match($4, /lowerdir=[^,]*/); lower = substr($4, RSTART + 9, RLENGTH - 9)
    printf "container %s: lower %s, upper %s/upper\n", substr(p[5], 1, 12), lower, substr(p[5], 1, 12) }'
$host exec --vm $name -- ls /run/fractal/layers
echo "== an interactive-style run with an exit status, then clean up"
set +e
$host run --vm $name --rm busybox sh -c 'echo "busybox $(busybox | head -1 | cut -d" " -f2) says bye"; exit 7'
echo "exit status: $?"
set -e
$host rm --vm $name -f web1 web2 web3 >/dev/null
$host ps -a --vm $name
echo "== stopping"
$host vm stop $name
trap - EXIT
