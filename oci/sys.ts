// The two file-system calls layer extraction needs that node:fs lacks:
// mknod(2) for device nodes and overlay whiteouts, lsetxattr(2) for
// extended attributes (and overlay's opaque marker). Through bun:ffi, so the
// agent and the host CLI (both Bun binaries) share one layer unpacker.
import { dlopen, FFIType, read, type Pointer } from "bun:ffi";

// Opened on first use: the CLI imports this module with every command, and
// only image unpacking needs it.
function symbols() {
  return dlopen("libc.so.6", {
    mknod: { args: [FFIType.cstring, FFIType.u32, FFIType.u64], returns: FFIType.i32 },
    lsetxattr: { args: [FFIType.cstring, FFIType.cstring, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    strerror: { args: [FFIType.i32], returns: FFIType.cstring },
    __errno_location: { args: [], returns: FFIType.ptr },
  }).symbols;
}
let libc: ReturnType<typeof symbols> | undefined;
const c = () => (libc ??= symbols());

/** A failed call, with errno's name in `code` as node:fs errors have it. */
export class FsCallError extends Error {
  constructor(
    call: string,
    path: string,
    readonly errno: number,
  ) {
    super(`${call} ${path}: ${String(c().strerror(errno))}`);
  }
}

const cstr = (s: string) => Buffer.from(`${s}\0`);
const errno = () => read.i32(c().__errno_location() as Pointer, 0); // glibc's errno pointer is always valid

export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

/** glibc's makedev: major and minor split across the 64-bit dev_t. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

export function mknod(path: string, type: number, perm: number, major = 0, minor = 0): void {
  if (c().mknod(cstr(path), (type | (perm & 0o7777)) >>> 0, makedev(major, minor)) !== 0) throw new FsCallError("mknod", path, errno());
}

export function lsetxattr(path: string, name: string, value: Uint8Array): void {
  const buf = value.length > 0 ? value : new Uint8Array(1);
  if (c().lsetxattr(cstr(path), cstr(name), buf, value.length, 0) !== 0) throw new FsCallError(`setxattr ${name}`, path, errno());
}
