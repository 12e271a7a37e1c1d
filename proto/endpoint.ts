// Endpoint URLs name where an agent listens or a client connects:
//   tcp://HOST:PORT   unix:///path/to.sock   ws://HOST:PORT[/path]
// Later transports (vsock, serial) add cases here and nowhere above.
import { ErrorCode, FractalError } from "./errors.js";

export type Endpoint =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "unix"; path: string }
  | { kind: "ws"; host: string; port: number; path: string };

export function parseEndpoint(url: string): Endpoint {
  const m = /^([a-z0-9+]+):\/\/(.*)$/.exec(url);
  if (!m) throw bad(url, "expected SCHEME://ADDRESS, e.g. tcp://127.0.0.1:5000");
  const [, scheme, rest] = m as unknown as [string, string, string];
  switch (scheme) {
    case "tcp": {
      const { host, port } = hostPort(url, rest);
      return { kind: "tcp", host, port };
    }
    case "unix":
      if (!rest.startsWith("/")) throw bad(url, "unix sockets need an absolute path: unix:///path/to.sock");
      return { kind: "unix", path: rest };
    case "ws": {
      const slash = rest.indexOf("/");
      const addr = slash < 0 ? rest : rest.slice(0, slash);
      const path = slash < 0 ? "/" : rest.slice(slash);
      const { host, port } = hostPort(url, addr);
      return { kind: "ws", host, port, path };
    }
    default:
      throw bad(url, `unknown scheme "${scheme}" (known: tcp, unix, ws)`);
  }
}

export function formatEndpoint(e: Endpoint): string {
  switch (e.kind) {
    case "tcp":
      return `tcp://${hostText(e.host)}:${e.port}`;
    case "unix":
      return `unix://${e.path}`;
    case "ws":
      return `ws://${hostText(e.host)}:${e.port}${e.path}`;
  }
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
