// AF_VSOCK sockets through bun:ffi: Bun and Node have no vsock support, but
// both accept a ready socket by file descriptor (net.Server#listen({fd}),
// Bun.connect({fd})). This file only makes those descriptors; it is the one
// place in proto/ that calls libc. Never call it on a host whose /dev/vsock
// belongs to someone else: tests use it inside a guest, over vsock_loopback.
import { ErrorCode, FractalError } from "./errors.js";

// <linux/socket.h>, <linux/vm_sockets.h>, <bits/socket_type.h>
const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
/** Bind to any CID. (Connect targets: 2 is the host, 1 the local loopback.) */
const VMADDR_CID_ANY = 0xffffffff;

interface Libc {
  socket(domain: number, type: number, proto: number): number;
  bind(fd: number, addr: Uint8Array, len: number): number;
  listen(fd: number, backlog: number): number;
  connect(fd: number, addr: Uint8Array, len: number): number;
  close(fd: number): number;
  errno(): number;
}

let libc: Libc | undefined;

async function load(): Promise<Libc> {
  if (libc) return libc;
  const { dlopen, FFIType, ptr, read } = await import("bun:ffi");
  const { symbols: s } = dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    bind: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    connect: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  libc = {
    socket: (d, t, p) => s.socket(d, t, p),
    bind: (fd, a, l) => s.bind(fd, ptr(a), l),
    listen: (fd, b) => s.listen(fd, b),
    connect: (fd, a, l) => s.connect(fd, ptr(a), l),
    close: (fd) => s.close(fd),
    errno: () => read.i32(s.__errno_location()!, 0), // libc always returns a valid thread-local pointer
  };
  return libc;
}

/** struct sockaddr_vm, 16 bytes. */
function sockaddr(cid: number, port: number): Uint8Array {
  const sa = new Uint8Array(16);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_VSOCK, true);
  v.setUint32(4, port, true);
  v.setUint32(8, cid, true);
  return sa;
}

function fail(c: Libc, what: string, fd?: number): never {
  const errno = c.errno();
  if (fd !== undefined && fd >= 0) c.close(fd);
  throw new FractalError(ErrorCode.UNAVAILABLE, `vsock ${what} failed (errno ${errno}${errno === 97 ? ": no vsock support; is the vsock module loaded?" : ""})`);
}

/** A listening, non-blocking vsock socket on `port` (any CID). */
export async function vsockListenFd(port: number): Promise<number> {
  const c = await load();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(c, "socket");
  if (c.bind(fd, sockaddr(VMADDR_CID_ANY, port), 16) < 0) fail(c, `bind to port ${port}`, fd);
  if (c.listen(fd, 128) < 0) fail(c, "listen", fd);
  return fd;
}

/** A connected vsock socket (blocking connect, then handed to the event loop). */
export async function vsockConnectFd(cid: number, port: number): Promise<number> {
  const c = await load();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(c, "socket");
  if (c.connect(fd, sockaddr(cid, port), 16) < 0) fail(c, `connect to ${cid}:${port}`, fd);
  return fd;
}
