// What the host and the guest agree on without a message: where the guest
// finds what the host shares, the names and ports of the agent's channels,
// and the guest's own helper. Each is defined here once and imported by both
// sides, so the host's QEMU command line and the agent cannot drift apart.

/** The agent's port on every guest transport that has ports (vsock, TCP). */
export const AGENT_PORT = 1024;
/** The virtio-serial port the agent serves, by name (/dev/virtio-ports/NAME). */
export const SERIAL_PORT_NAME = "org.fractal.agent";
/** The serial of the virtio disk the agent is on when the initramfs lacks it (initramfs/nshelper/bootstrap.go). */
export const AGENT_DISK_SERIAL = "fractal-agent";
/** Where `boot --images` mounts the host's image store in the guest. */
export const IMAGE_STORE = "/var/lib/fractal/images";
/** Where `boot --host-root` mounts the host's root in the guest (exec --namespace binds from it). */
export const HOST_ROOT = "/host";
/**
 * The guest's single-threaded Go helper (initramfs/nshelper): namespaces
 * for exec --namespace, the pivotable root crun needs, the containers'
 * shim, and the supervisor that restarts the agent.
 */
export const NS_HELPER = "/bin/fractal-ns";
