// AF_VSOCK sockets: Bun and Node have no vsock support, but both accept a
// ready socket by file descriptor (net.Server#listen({fd}), Bun.connect({fd})).
// This file only makes those descriptors, through proto/libc.ts. Never call
// it on a host whose /dev/vsock belongs to someone else: tests use it inside a
// guest, over vsock_loopback.
import { ErrorCode, FractalError } from "./errors.js";
import { EAFNOSUPPORT, SysError, bind, connect, listen, socket } from "./libc.js";

// <linux/socket.h>, <linux/vm_sockets.h>, <bits/socket_type.h>
const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
/** Bind to any CID. (Connect targets: 2 is the host, 1 the local loopback.) */
const VMADDR_CID_ANY = 0xffffffff;

/** struct sockaddr_vm, 16 bytes. */
function sockaddr(cid: number, port: number): Uint8Array {
  const sa = new Uint8Array(16);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_VSOCK, true);
  v.setUint32(4, port, true);
  v.setUint32(8, cid, true);
  return sa;
}

/** Runs `make`, turning a failed call into UNAVAILABLE with a hint when the kernel has no vsock. */
function vsock<T>(make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (!(err instanceof SysError)) throw err;
    const hint = err.errno === EAFNOSUPPORT ? ": no vsock support; is the vsock module loaded?" : "";
    throw new FractalError(ErrorCode.UNAVAILABLE, `vsock ${err.message}${hint}`);
  }
}

/** A listening, non-blocking vsock socket on `port` (any CID). */
export function vsockListenFd(port: number): number {
  return vsock(() => {
    const fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bind(fd, sockaddr(VMADDR_CID_ANY, port), `bind to port ${port}`);
    listen(fd, 128, "listen");
    return fd;
  });
}

/** A connected vsock socket (blocking connect, then handed to the event loop). */
export function vsockConnectFd(cid: number, port: number): number {
  return vsock(() => {
    const fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    connect(fd, sockaddr(cid, port), `connect to ${cid}:${port}`);
    return fd;
  });
}
