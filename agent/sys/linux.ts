// Linux system calls the agent needs as a guest's init task, through bun:ffi.
// Everything here is Linux-only and lives in this one module behind small
// typed functions, so the rest of the agent stays testable anywhere.
//
// None of these touch per-thread state that Bun's other threads would miss
// (mount(2) in the initial mount namespace, finit_module(2), sethostname(2),
// termios): setns/unshare, which are per-thread, never appear here.
import fs from "node:fs";
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";

// <sys/syscall.h> x86_64; the libc wrapper for finit_module is missing in older glibc.
const SYS_finit_module = 313;

const { symbols: c } = dlopen("libc.so.6", {
  umount2: { args: [FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
  mount: { args: [FFIType.cstring, FFIType.cstring, FFIType.cstring, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  sethostname: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  syscall: { args: [FFIType.i64, FFIType.i64, FFIType.ptr, FFIType.i64], returns: FFIType.i64 },
  tcgetattr: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  tcsetattr: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  cfmakeraw: { args: [FFIType.ptr], returns: FFIType.void },
  sync: { args: [], returns: FFIType.void },
  reboot: { args: [FFIType.i32], returns: FFIType.i32 },
  strerror: { args: [FFIType.i32], returns: FFIType.cstring },
  ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
});

export class SysError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${String(c.strerror(errno))} (errno ${errno})`);
  }
}

const ENOENT = 2;
const EEXIST = 17;
const EBUSY = 16;

function errno(): number {
  return read.i32(c.__errno_location() as Pointer, 0); // glibc's errno pointer is always valid
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

// <linux/mount.h>
export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_RELATIME = 1 << 21;

/** mount(2). data is the filesystem's option string. */
export function mount(source: string, target: string, fstype: string, flags: number, data = ""): void {
  const d = cstr(data);
  const rc = c.mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), ptr(d));
  if (rc !== 0) throw new SysError(`mount ${fstype} on ${target}`, errno());
}

export function umount(target: string): void {
  umount2(target, 0);
}

/** Detach now, clean up when the last user goes (a container's rootfs may still be busy). */
export const MNT_DETACH = 2;

export function umount2(target: string, flags: number): void {
  if (c.umount2(cstr(target), flags) !== 0) throw new SysError(`umount ${target}`, errno());
}

/** Loads a kernel module from a file; true if loaded now, false if it already was (or is built in). */
export function loadModule(path: string, params = ""): boolean {
  const fd = fs.openSync(path, "r");
  try {
    const p = cstr(params);
    const rc = Number(c.syscall(SYS_finit_module, fd, ptr(p), 0));
    if (rc === 0) return true;
    const e = errno();
    if (e === EEXIST || e === EBUSY) return false;
    // finit_module's ENOENT means an unresolved symbol, not a missing file.
    if (e === ENOENT) throw new Error(`finit_module ${path}: unknown symbol (a dependency is not loaded; see dmesg)`);
    throw new SysError(`finit_module ${path}`, e);
  } finally {
    fs.closeSync(fd);
  }
}

export function setHostname(name: string): void {
  const b = Buffer.from(name);
  if (c.sethostname(ptr(b), BigInt(b.length)) !== 0) throw new SysError("sethostname", errno());
}

/** Puts a terminal into raw mode (cfmakeraw): 8-bit clean, no echo, no line editing. */
export function makeRaw(fd: number): void {
  const termios = new Uint8Array(64); // sizeof(struct termios) is 60 on x86_64
  if (c.tcgetattr(fd, ptr(termios)) !== 0) throw new SysError("tcgetattr", errno());
  c.cfmakeraw(ptr(termios));
  if (c.tcsetattr(fd, 0 /* TCSANOW */, ptr(termios)) !== 0) throw new SysError("tcsetattr", errno());
}

// <linux/reboot.h>
const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;
const LINUX_REBOOT_CMD_RESTART = 0x01234567;

/** Flushes filesystems and powers off or restarts the machine. Returns only on failure. */
export function powerOff(restart: boolean): never {
  c.sync();
  c.reboot(restart ? LINUX_REBOOT_CMD_RESTART : LINUX_REBOOT_CMD_POWER_OFF);
  throw new SysError("reboot", errno());
}

const TIOCSWINSZ = 0x5414;

/**
 * Sets the window size of the terminal `fd` refers to (a PTY slave works as
 * well as its master); the kernel then sends SIGWINCH to its foreground group.
 */
export function setWindowSize(fd: number, cols: number, rows: number): void {
  const ws = new Uint16Array([rows, cols, 0, 0]);
  if (c.ioctl(fd, TIOCSWINSZ, ptr(ws)) !== 0) throw new SysError("ioctl TIOCSWINSZ", errno());
}
