// Client side of every transport: an endpoint URL in, a connected Link out.
import fs from "node:fs";
import type net from "node:net";
import { parseEndpoint, formatEndpoint, type Endpoint } from "./endpoint.js";
import { ErrorCode, FractalError } from "./errors.js";
import { socketLink, type Link } from "./link.js";
import { bunSocketLink, type BunTarget } from "./bun-link.js";
import { fileLink } from "./file-link.js";

export const DIAL_TIMEOUT_MS = 10_000;

export interface DialOptions {
  timeoutMs?: number;
  /** tls:// and wss://: PEM certificates to trust instead of the system's (a self-signed agent's own). */
  tlsCa?: string;
}

export async function dial(url: string | Endpoint, opts: DialOptions = {}): Promise<Link> {
  const ep = typeof url === "string" ? parseEndpoint(url) : url;
  const where = formatEndpoint(ep);
  const timeoutMs = opts.timeoutMs ?? DIAL_TIMEOUT_MS;
  switch (ep.kind) {
    case "tcp":
      return plainSocket({ hostname: ep.host, port: ep.port }, where, timeoutMs, `tcp ${ep.host}:${ep.port}`);
    case "tls": {
      // Loaded here: node:tls costs every CLI start a few milliseconds.
      const [tls, net] = await Promise.all([import("node:tls"), import("node:net")]);
      const sock = tls.connect({ host: ep.host, port: ep.port, ca: opts.tlsCa, servername: net.isIP(ep.host) ? undefined : ep.host });
      return socketLink(await connectSocket(sock, where, timeoutMs, "secureConnect"), `tls ${ep.host}:${ep.port}`);
    }
    case "unix":
      return plainSocket({ unix: ep.path }, where, timeoutMs, `unix ${ep.path}`);
    case "ws":
    case "wss": {
      // Loaded here, as node:tls is: ws costs every CLI start a few milliseconds.
      const [{ default: WebSocket }, { wsLink }] = await Promise.all([import("ws"), import("./ws-link.js")]);
      const ws = new WebSocket(`${ep.kind}://${ep.host.includes(":") ? `[${ep.host}]` : ep.host}:${ep.port}${ep.path}`, { ca: opts.tlsCa });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          ws.terminate();
          reject(unreachable(where, "timed out"));
        }, timeoutMs);
        ws.once("open", () => {
          clearTimeout(timer);
          resolve();
        });
        ws.once("error", (err: Error) => {
          clearTimeout(timer);
          reject(unreachable(where, err.message));
        });
      });
      return wsLink(ws, `${ep.kind} ${ep.host}:${ep.port}`);
    }
    case "vsock": {
      const { vsockConnectFd } = await import("./vsock.js");
      return bunSocketLink({ fd: vsockConnectFd(ep.cid, ep.port) }, `vsock ${ep.cid}:${ep.port}`);
    }
    case "hvsock": {
      const sock = await connectSocket(await netConnect({ path: ep.path }), where, timeoutMs);
      const rest = await hybridVsockHandshake(sock, ep.port, where, timeoutMs);
      return socketLink(sock, `hvsock ${ep.path}:${ep.port}`, rest);
    }
    case "serial": {
      let st: fs.Stats;
      try {
        st = fs.statSync(ep.path);
      } catch {
        throw unreachable(where, "no such file");
      }
      if (st.isSocket()) {
        // QEMU exposes a virtio-serial or UART chardev as a unix socket: a
        // byte stream that can tear when we reconnect, hence resync.
        const sock = await connectSocket(await netConnect({ path: ep.path }), where, timeoutMs);
        return { ...socketLink(sock, `serial ${ep.path}`), resync: true };
      }
      return await serialLine(ep.path, ep.baud, where);
    }
    case "virtio-serial":
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: virtio-serial ports exist only in the guest; on the host use serial:///path/to/the/chardev.sock`);
  }
}

/**
 * A host serial port (a USB adapter, a UART): raw 8N1 at the rate asked
 * for, as the agent sets its end; the port's settings are put back when the
 * link closes, as stty users expect of a tool that borrowed the line.
 * A file that is not a terminal (a FIFO, a pty's log) is used as it is.
 */
async function serialLine(file: string, baud: number | undefined, where: string): Promise<Link> {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
  } catch (err) {
    throw unreachable(where, (err as Error).message);
  }
  const { getTermios, makeRawLine, setTermios, SysError } = await import("./libc.js");
  let saved: Uint8Array | undefined;
  try {
    saved = getTermios(fd);
  } catch (err) {
    // ENOTTY: not a terminal. Anything else (no termios binding on this OS) is said as it is.
    if (baud !== undefined || !(err instanceof SysError)) {
      fs.closeSync(fd);
      const why = err instanceof SysError ? `${file} is not a terminal, so it has no line rate` : (err as Error).message;
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: ${why}`);
    }
  }
  if (saved) {
    try {
      makeRawLine(fd, baud);
    } catch (err) {
      fs.closeSync(fd);
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: cannot set up the line: ${(err as Error).message}`);
    }
  }
  const restore = saved;
  return fileLink(fd, `serial ${file}`, { beforeClose: restore ? () => setTermios(fd, restore) : undefined });
}

/**
 * Firecracker / cloud-hypervisor hybrid vsock: the host side is a unix socket
 * where the client writes "CONNECT PORT\n" and the VMM answers "OK N\n".
 * Returns any bytes that followed the answer line.
 */
function hybridVsockHandshake(sock: net.Socket, port: number, where: string, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(unreachable(where, "no answer to CONNECT")), timeoutMs);
    const done = (err?: Error, rest?: Buffer) => {
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("end", onEnd);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve(rest!); // set on success
    };
    const onData = (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      const nl = buf.indexOf(10);
      if (nl < 0) {
        if (buf.length > 256) done(unreachable(where, "hybrid vsock answer too long"));
        return;
      }
      const line = buf.subarray(0, nl).toString().trim();
      if (!line.startsWith("OK")) return done(unreachable(where, `hybrid vsock refused port ${port}: "${line}"`));
      done(undefined, buf.subarray(nl + 1));
    };
    // Firecracker closes the connection when nothing listens on the port.
    const onEnd = () => done(unreachable(where, `the VMM closed the connection: nothing listens on port ${port}?`));
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.write(`CONNECT ${port}\n`);
  });
}

function connectSocket(sock: net.Socket, where: string, timeoutMs: number, event = "connect"): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(unreachable(where, "timed out"));
    }, timeoutMs);
    sock.once(event, () => {
      clearTimeout(timer);
      sock.removeAllListeners("error");
      resolve(sock);
    });
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(unreachable(where, err.message));
    });
  });
}

/** node:net, loaded only by the paths that use it (see plainSocket). */
async function netConnect(opts: net.NetConnectOpts): Promise<net.Socket> {
  return (await import("node:net")).connect(opts);
}

type PlainTarget = Exclude<BunTarget, { fd: number }>;

/**
 * A TCP or unix socket: Bun's own in Bun (the CLI), without node:net's
 * streams, whose loading cost every start a few milliseconds; node:net under
 * Node (the tests' runner).
 */
async function plainSocket(target: PlainTarget, where: string, timeoutMs: number, description: string): Promise<Link> {
  if (typeof Bun !== "undefined") return bunConnect(target, where, timeoutMs, description);
  const opts = "unix" in target ? { path: target.unix } : { host: target.hostname, port: target.port };
  return socketLink(await connectSocket(await netConnect(opts), where, timeoutMs), description);
}

function bunConnect(target: PlainTarget, where: string, timeoutMs: number, description: string): Promise<Link> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(unreachable(where, "timed out"));
    }, timeoutMs);
    bunSocketLink(target, description).then(
      (link) => {
        clearTimeout(timer);
        // A connection that completed after we gave up is nobody's.
        if (late) link.close();
        else resolve(link);
      },
      (err: Error & { code?: string; syscall?: string }) => {
        clearTimeout(timer);
        // Said as node:net says it ("connect ECONNREFUSED 127.0.0.1:1"):
        // Bun's own message is only "Failed to connect".
        const addr = "unix" in target ? target.unix : `${target.hostname}:${target.port}`;
        reject(unreachable(where, err.code ? `${err.syscall ?? "connect"} ${err.code} ${addr}` : err.message));
      },
    );
  });
}

function unreachable(where: string, why: string): FractalError {
  return new FractalError(ErrorCode.UNAVAILABLE, `cannot connect to ${where}: ${why}`);
}
