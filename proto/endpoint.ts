// Endpoint URLs name where an agent listens or a client connects:
//   tcp://HOST:PORT        unix:///path/to.sock     ws://HOST:PORT[/path]
//   tls://HOST:PORT        wss://HOST:PORT[/path]   (TCP and WebSocket over TLS)
//   vsock://CID:PORT       (listen: vsock://:PORT, any CID)
//   hvsock:///path.sock:PORT  Firecracker / cloud-hypervisor hybrid vsock (client only)
//   serial:///dev/ttyS1    a serial line; on the host also a unix socket that
//                          carries one (QEMU's virtio-serial chardev);
//                          serial:///dev/ttyUSB0?baud=115200 sets the line rate
//   virtio-serial://NAME   a virtio-serial port by name (agent only)
// A new transport adds a case here and in dial/listen, and nowhere above.
import { ErrorCode, FractalError } from "./errors.js";

export type Endpoint =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "unix"; path: string }
  | { kind: "ws"; host: string; port: number; path: string }
  | { kind: "tls"; host: string; port: number }
  | { kind: "wss"; host: string; port: number; path: string }
  | { kind: "vsock"; cid: number; port: number }
  | { kind: "hvsock"; path: string; port: number }
  | { kind: "serial"; path: string; baud?: number }
  | { kind: "virtio-serial"; name: string };

/** The rates Linux's termios can set (<asm-generic/termbits.h> B50 to B4000000). */
export const BAUD_RATES = [
  50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000,
  921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
];

/** CID meaning "any" when listening (VMADDR_CID_ANY). */
export const ANY_CID = 0xffffffff;

export function parseEndpoint(url: string): Endpoint {
  const m = /^([a-z0-9+-]+):\/\/(.*)$/.exec(url);
  if (!m) throw bad(url, "expected SCHEME://ADDRESS, e.g. tcp://127.0.0.1:5000");
  const [, scheme, rest] = m as unknown as [string, string, string];
  switch (scheme) {
    case "tcp":
    case "tls": {
      const { host, port } = hostPort(url, rest);
      return { kind: scheme, host, port };
    }
    case "unix":
      if (!rest.startsWith("/")) throw bad(url, "unix sockets need an absolute path: unix:///path/to.sock");
      return { kind: "unix", path: rest };
    case "ws":
    case "wss": {
      const slash = rest.indexOf("/");
      const addr = slash < 0 ? rest : rest.slice(0, slash);
      const path = slash < 0 ? "/" : rest.slice(slash);
      const { host, port } = hostPort(url, addr);
      return { kind: scheme, host, port, path };
    }
    case "vsock": {
      const m2 = /^(-1|\d*):(\d+)$/.exec(rest);
      if (!m2) throw bad(url, "expected vsock://CID:PORT (or vsock://:PORT to listen on any CID)");
      const cid = m2[1] === "" || m2[1] === "-1" ? ANY_CID : Number(m2[1]);
      return { kind: "vsock", cid, port: u32(url, m2[2]!) };
    }
    case "hvsock": {
      const m2 = /^(\/.+):(\d+)$/.exec(rest);
      if (!m2) throw bad(url, "expected hvsock:///path/to/vsock.sock:PORT");
      return { kind: "hvsock", path: m2[1]!, port: u32(url, m2[2]!) };
    }
    case "serial": {
      const [file, query] = rest.split("?", 2) as [string, string | undefined];
      if (!file.startsWith("/")) throw bad(url, "expected serial:///dev/ttyS1 or serial:///path/to/chardev.sock");
      if (query === undefined) return { kind: "serial", path: file };
      const m2 = /^baud=(\d+)$/.exec(query);
      if (!m2) throw bad(url, `unknown option "${query}" (known: baud=RATE, e.g. serial:///dev/ttyUSB0?baud=115200)`);
      const baud = Number(m2[1]);
      if (!BAUD_RATES.includes(baud)) throw bad(url, `${baud} is not a line rate a serial port takes (e.g. 9600, 38400, 115200, 921600)`);
      return { kind: "serial", path: file, baud };
    }
    case "virtio-serial":
      if (!/^[\w.-]+$/.test(rest)) throw bad(url, "expected virtio-serial://PORT-NAME, e.g. virtio-serial://org.fractal.agent");
      return { kind: "virtio-serial", name: rest };
    default:
      throw bad(url, `unknown scheme "${scheme}" (known: tcp, tls, unix, ws, wss, vsock, hvsock, serial, virtio-serial)`);
  }
}

export function formatEndpoint(e: Endpoint): string {
  switch (e.kind) {
    case "tcp":
    case "tls":
      return `${e.kind}://${hostText(e.host)}:${e.port}`;
    case "unix":
      return `unix://${e.path}`;
    case "ws":
    case "wss":
      return `${e.kind}://${hostText(e.host)}:${e.port}${e.path}`;
    case "vsock":
      return `vsock://${e.cid === ANY_CID ? "" : e.cid}:${e.port}`;
    case "hvsock":
      return `hvsock://${e.path}:${e.port}`;
    case "serial":
      return `serial://${e.path}${e.baud !== undefined ? `?baud=${e.baud}` : ""}`;
    case "virtio-serial":
      return `virtio-serial://${e.name}`;
  }
}

function u32(url: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw bad(url, `${s} is out of range`);
  return n;
}

function hostText(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

function hostPort(url: string, addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  if (!m) throw bad(url, "expected HOST:PORT");
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad(url, `port ${m[3]} is out of range`);
  const host = m[1] ?? m[2] ?? "";
  return { host: host === "" ? "0.0.0.0" : host, port };
}

function bad(url: string, why: string): FractalError {
  return new FractalError(ErrorCode.INVALID_ARGUMENT, `bad endpoint "${url}": ${why}`);
}
