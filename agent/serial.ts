// Serving the protocol on serial lines (a UART, a virtio-serial port). A
// serial line has no connections, only bytes, so the agent gives each host
// session its own "epoch": a fresh Link and Session over the same device.
// An epoch ends when
//   * the device reads EOF (virtio-serial: the host side disconnected); the
//     port is reopened after a short pause, or
//   * a Hello arrives on an epoch that already shook hands: the host
//     reconnected without us seeing it (a UART has no hang-up), so the old
//     session is torn down and the Hello starts the next one.
// Junk left from a torn session is skipped by the resynchronising decoder.
import fs from "node:fs";
import path from "node:path";
import { formatEndpoint, type Endpoint } from "../proto/endpoint.js";
import { encodeFrame } from "../proto/frame.js";
import type { Link } from "../proto/link.js";
import type { Authenticator } from "../proto/session.js";
import type { Frame } from "../proto/wire.js";
import { fileLink } from "../proto/file-link.js";
import { log } from "./log.js";
import { serveLink, type Served } from "./server.js";
import { makeRaw } from "../proto/libc.js";

// Short, because the next host may be waiting (its Hello is repeated, so
// nothing is lost); not zero, because a port with no host attached reads EOF
// at once and we would spin.
const REOPEN_DELAY_MS = 100;

/** Finds a virtio-serial port's device by its name, as udev would link it under /dev/virtio-ports. */
export function virtioPortPath(name: string): string | undefined {
  const byName = path.join("/dev/virtio-ports", name);
  if (fs.existsSync(byName)) return byName;
  const cls = "/sys/class/virtio-ports";
  if (!fs.existsSync(cls)) return undefined;
  for (const port of fs.readdirSync(cls)) {
    try {
      if (fs.readFileSync(path.join(cls, port, "name"), "utf8").trim() === name) return path.join("/dev", port);
    } catch {
      // port without a name
    }
  }
  return undefined;
}

function devicePath(ep: Endpoint): string | undefined {
  if (ep.kind === "serial") return ep.path;
  if (ep.kind === "virtio-serial") return virtioPortPath(ep.name);
  return undefined;
}

/** Serves one serial endpoint forever; never throws. */
export function serveSerial(ep: Endpoint, authenticator: Authenticator | undefined, served: Served): void {
  const where = formatEndpoint(ep);
  let waitingLogged = false;
  const open = () => {
    const dev = devicePath(ep);
    if (!dev || !fs.existsSync(dev)) {
      if (!waitingLogged) log("warn", `${where}: device not present yet; retrying`);
      waitingLogged = true;
      setTimeout(open, 1000);
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
      if (ep.kind === "serial") makeRaw(fd);
    } catch (err) {
      log("error", `${where}: cannot open ${dev}: ${(err as Error).message}`);
      setTimeout(open, 1000);
      return;
    }
    runEpochs(fd, where, authenticator, served, () => setTimeout(open, REOPEN_DELAY_MS));
  };
  log("info", `listening on ${where}`);
  open();
}

/** Splits one device into a sequence of per-session links. */
function runEpochs(fd: number, where: string, authenticator: Authenticator | undefined, served: Served, onDeviceClosed: () => void): void {
  let current: Epoch | undefined;
  // EOF ends the host's session; the fd stays open for the next one.
  const device = fileLink(fd, where, {
    onEof: () => {
      current?.end();
      start();
    },
    rearmMs: REOPEN_DELAY_MS,
  });
  const start = (firstBytes?: Uint8Array) => {
    const epoch = new Epoch(
      device,
      (hello) => {
        current?.end();
        start(encodeFrame(hello));
      },
      // The session closed itself (a protocol error, or no Hello within the
      // handshake timeout): the line is still there, so serve the next host.
      () => {
        if (current === epoch) start();
      },
    );
    current = epoch;
    serveLink(epoch.link, authenticator, served);
    if (firstBytes) epoch.feed(firstBytes);
  };
  device.onData((b) => current?.feed(b));
  device.onDrain(() => current?.drain());
  device.onClose(() => {
    current?.end();
    current = undefined;
    onDeviceClosed();
  });
  start();
}

class Epoch {
  private dataCbs: ((c: Uint8Array) => void)[] = [];
  private drainCbs: (() => void)[] = [];
  private closeCbs: ((err?: Error) => void)[] = [];
  private ended = false;
  readonly link: Link;

  constructor(
    device: Link,
    readonly onRehello: (hello: NonNullable<Frame["hello"]>) => void,
    readonly onSessionClosed: () => void,
  ) {
    this.link = {
      description: device.description,
      resync: true,
      write: (chunks) => (this.ended ? true : device.write(chunks)),
      // Closing a session must not close the device: the next host needs it.
      close: () => {
        if (this.ended) return;
        this.end();
        this.onSessionClosed();
      },
      onData: (cb) => void this.dataCbs.push(cb),
      onDrain: (cb) => void this.drainCbs.push(cb),
      onClose: (cb) => void this.closeCbs.push(cb),
      rehello: (hello) => this.onRehello(hello),
    };
  }

  feed(b: Uint8Array): void {
    if (!this.ended) for (const cb of this.dataCbs) cb(b);
  }

  drain(): void {
    if (!this.ended) for (const cb of this.drainCbs) cb();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const cb of this.closeCbs) cb();
  }
}
