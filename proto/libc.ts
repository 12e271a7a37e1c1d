// The one binding of libc through bun:ffi, for both sides: the system calls
// node:fs and node:net lack (mount, finit_module, reboot, termios, window
// sizes, mknod, xattrs, pipes, AF_VSOCK sockets, a hang-up check), each behind a small typed
// function, with one error type. Linux only; nothing else in the tree
// imports bun:ffi.
//
// libc is opened on first use, not at import: the CLI loads this module with
// every command and most never make one of these calls. None of the calls
// touches per-thread state Bun's other threads would miss (setns and unshare
// of the mount namespace, which are per-thread, never appear here: see
// initramfs/nshelper).
import fs from "node:fs";
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";

function open() {
  return dlopen("libc.so.6", {
    mount: { args: [FFIType.cstring, FFIType.cstring, FFIType.cstring, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    umount2: { args: [FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
    sethostname: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
    syscall: { args: [FFIType.i64, FFIType.i64, FFIType.ptr, FFIType.i64], returns: FFIType.i64 },
    tcgetattr: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    tcsetattr: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    cfmakeraw: { args: [FFIType.ptr], returns: FFIType.void },
    cfsetspeed: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    sync: { args: [], returns: FFIType.void },
    reboot: { args: [FFIType.i32], returns: FFIType.i32 },
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    mknod: { args: [FFIType.cstring, FFIType.u32, FFIType.u64], returns: FFIType.i32 },
    lsetxattr: { args: [FFIType.cstring, FFIType.cstring, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    lgetxattr: { args: [FFIType.cstring, FFIType.cstring, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    bind: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    connect: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    strerror: { args: [FFIType.i32], returns: FFIType.cstring },
    __errno_location: { args: [], returns: FFIType.ptr },
  }).symbols;
}
let symbols: ReturnType<typeof open> | undefined;
const c = () => {
  if (symbols) return symbols;
  // The calls here are Linux's: on macOS the CLI gets as far as needing one
  // (a host serial port, unpacking device nodes) and says so.
  if (process.platform !== "linux") throw new Error(`this needs Linux system calls (termios, mknod, mount), which fractal does not bind on ${process.platform}`);
  return (symbols = open());
};

/** A failed system call: which, on what, and errno (with its text). */
export class SysError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${String(c().strerror(errno))} (errno ${errno})`);
    this.name = "SysError";
  }
}

// <asm-generic/errno-base.h>
export const ENOENT = 2;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODATA = 61;
export const EOPNOTSUPP = 95;
export const EAFNOSUPPORT = 97;

function errno(): number {
  return read.i32(c().__errno_location() as Pointer, 0); // glibc's errno pointer is always valid
}

const cstr = (s: string) => Buffer.from(`${s}\0`);

/** Throws SysError for a call that returned non-zero. */
function check(rc: number | bigint, call: string): void {
  if (Number(rc) !== 0) throw new SysError(call, errno());
}

// --- mounts (<linux/mount.h>) -------------------------------------------------

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_REMOUNT = 32;
export const MS_BIND = 4096;
export const MS_RELATIME = 1 << 21;
/** umount2: detach now, clean up when the last user goes (a container's rootfs may still be busy). */
export const MNT_DETACH = 2;

/** mount(2). data is the filesystem's option string. */
export function mount(source: string, target: string, fstype: string, flags: number, data = ""): void {
  check(c().mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), ptr(cstr(data))), `mount ${fstype} on ${target}`);
}

export function umount2(target: string, flags = 0): void {
  check(c().umount2(cstr(target), flags), `umount ${target}`);
}

// --- the machine ----------------------------------------------------------------

// <asm/unistd.h>: x86_64's table, and arm64's (the generic one); the libc
// wrapper for finit_module is missing in older glibc.
const SYS_finit_module = process.arch === "arm64" ? 273 : 313;

/** Loads a kernel module from a file; true if loaded now, false if it already was (or is built in). */
export function loadModule(path: string, params = ""): boolean {
  const fd = fs.openSync(path, "r");
  try {
    if (Number(c().syscall(SYS_finit_module, fd, ptr(cstr(params)), 0)) === 0) return true;
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
  check(c().sethostname(ptr(b), BigInt(b.length)), "sethostname");
}

// <linux/reboot.h>
const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;
const LINUX_REBOOT_CMD_RESTART = 0x01234567;

/** Flushes filesystems and powers off or restarts the machine. Returns only on failure. */
export function powerOff(restart: boolean): never {
  c().sync();
  c().reboot(restart ? LINUX_REBOOT_CMD_RESTART : LINUX_REBOOT_CMD_POWER_OFF);
  throw new SysError("reboot", errno());
}

// --- terminals ------------------------------------------------------------------

/** A terminal's settings (struct termios, 60 bytes on x86_64 and arm64), to hand back to setTermios. */
export function getTermios(fd: number): Uint8Array {
  const termios = new Uint8Array(64);
  check(c().tcgetattr(fd, ptr(termios)), "tcgetattr");
  return termios;
}

export function setTermios(fd: number, termios: Uint8Array): void {
  check(c().tcsetattr(fd, 0 /* TCSANOW */, ptr(termios)), "tcsetattr");
}

// <asm-generic/termbits.h> c_cflag bits
const CREAD = 0o200;
const CLOCAL = 0o4000;
const CRTSCTS = 0o20000000000;

/**
 * A serial line for a byte protocol: raw, 8N1, receiver on, modem control
 * lines ignored (CLOCAL: a cable without DCD must not block the open or
 * hang us up), no hardware flow control, and `baud` bits per second when
 * given (glibc's cfsetspeed takes the plain number).
 */
export function makeRawLine(fd: number, baud?: number): void {
  const termios = getTermios(fd);
  c().cfmakeraw(ptr(termios));
  const view = new DataView(termios.buffer);
  view.setUint32(8, ((view.getUint32(8, true) | CREAD | CLOCAL) & ~CRTSCTS) >>> 0, true); // c_cflag
  if (baud !== undefined) check(c().cfsetspeed(ptr(termios), baud), `cfsetspeed ${baud}`);
  setTermios(fd, termios);
}

const TIOCSWINSZ = 0x5414;

/**
 * Sets the window size of the terminal `fd` refers to (a PTY slave works as
 * well as its master); the kernel then sends SIGWINCH to its foreground group.
 */
export function setWindowSize(fd: number, cols: number, rows: number): void {
  check(c().ioctl(fd, TIOCSWINSZ, ptr(new Uint16Array([rows, cols, 0, 0]))), "ioctl TIOCSWINSZ");
}

// <poll.h>
const POLLIN = 0x1;
const POLLHUP = 0x10;

/**
 * Whether fd reports a hang-up right now (POLLHUP), without waiting: a
 * virtio-serial port does while no host is attached to it.
 */
export function hungUp(fd: number): boolean {
  const pfd = Buffer.alloc(8); // struct pollfd { int fd; short events; short revents; }
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  if (c().poll(ptr(pfd), 1, 0) < 0) throw new SysError("poll", errno());
  return (pfd.readInt16LE(6) & POLLHUP) !== 0;
}

// <fcntl.h>; O_ASYNC is 020000 on x86-64 and arm64 alike.
const F_GETFL = 3;
const F_SETFL = 4;
const F_SETOWN = 8;
const O_ASYNC = 0o20000;

/**
 * Has the kernel send this process SIGIO when fd's state changes (`on`), or
 * stops it: a virtio-serial port signals when a host attaches or leaves, a
 * pipe when bytes arrive. Handle SIGIO before turning it on: the signal's
 * default action ends the process.
 */
export function signalOnIo(fd: number, on: boolean): void {
  const flags = c().fcntl(fd, F_GETFL, 0);
  if (flags < 0) throw new SysError("fcntl F_GETFL", errno());
  if (on && c().fcntl(fd, F_SETOWN, process.pid) < 0) throw new SysError("fcntl F_SETOWN", errno());
  if (c().fcntl(fd, F_SETFL, on ? flags | O_ASYNC : flags & ~O_ASYNC) < 0) throw new SysError("fcntl F_SETFL", errno());
}

// --- files node:fs cannot make ------------------------------------------------

export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

/** glibc's makedev: major and minor split across the 64-bit dev_t. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

/** mknod(2): device nodes, FIFOs, overlay whiteouts (0/0 character devices). */
export function mknod(path: string, type: number, perm: number, major = 0, minor = 0): void {
  check(c().mknod(cstr(path), (type | (perm & 0o7777)) >>> 0, makedev(major, minor)), `mknod ${path}`);
}

/** lsetxattr(2): an extended attribute on the path itself, never a symlink's target. */
export function lsetxattr(path: string, name: string, value: Uint8Array): void {
  const buf = value.length > 0 ? value : new Uint8Array(1);
  check(c().lsetxattr(cstr(path), cstr(name), buf, value.length, 0), `setxattr ${name} ${path}`);
}

/** lgetxattr(2): the attribute's value (at most 256 bytes), or undefined when the path has none. */
export function lgetxattr(path: string, name: string): Uint8Array | undefined {
  const buf = new Uint8Array(256);
  const n = Number(c().lgetxattr(cstr(path), cstr(name), buf, buf.length));
  if (n >= 0) return buf.subarray(0, n);
  const e = errno();
  if (e === ENODATA || e === EOPNOTSUPP) return undefined;
  throw new SysError(`getxattr ${name} ${path}`, e);
}

// --- pipes --------------------------------------------------------------------

const O_CLOEXEC = 0o2000000;
const F_SETPIPE_SZ = 1031;

/**
 * A pipe, both ends close-on-exec; throws SysError. Bun.spawn's "pipe" is a
 * socketpair, which a child cannot reopen through /proc/self/fd (what
 * /dev/stdout is): ssh, docker and cpu give their commands pipes.
 *
 * `bufferBytes` asks for a larger buffer than Linux's 64 KiB. A refusal (above
 * fs.pipe-max-size without CAP_SYS_RESOURCE, or past the user's pipe page
 * quota) leaves the default: a smaller buffer costs speed, not correctness.
 * Pages are taken only as data fills the pipe: an idle 1 MiB pipe costs its
 * 10 KiB ring of slots, a full one 1 MiB of kernel memory.
 */
export function pipe(bufferBytes?: number): { read: number; write: number } {
  const fds = new Int32Array(2);
  if (c().pipe2(ptr(fds), O_CLOEXEC) !== 0) throw new SysError("pipe2", errno());
  if (bufferBytes !== undefined) c().fcntl(fds[0]!, F_SETPIPE_SZ, bufferBytes);
  return { read: fds[0]!, write: fds[1]! };
}

// --- sockets node:net cannot make (AF_VSOCK) ---------------------------------------

/** A new socket's fd; throws SysError. */
export function socket(domain: number, type: number, protocol: number): number {
  const fd = c().socket(domain, type, protocol);
  if (fd < 0) throw new SysError("socket", errno());
  return fd;
}

/** Runs one socket call on `fd`; on failure closes it and throws SysError naming `what`. */
function orClose(fd: number, rc: number, what: string): void {
  if (rc === 0) return;
  const e = errno();
  c().close(fd);
  throw new SysError(what, e);
}

export function bind(fd: number, addr: Uint8Array, what: string): void {
  orClose(fd, c().bind(fd, ptr(addr), addr.length), what);
}

export function listen(fd: number, backlog: number, what: string): void {
  orClose(fd, c().listen(fd, backlog), what);
}

export function connect(fd: number, addr: Uint8Array, what: string): void {
  orClose(fd, c().connect(fd, ptr(addr), addr.length), what);
}
