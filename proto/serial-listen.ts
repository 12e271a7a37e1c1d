// Serial lines (a UART, a virtio-serial port) as a listener. A serial line
// has no connections, only bytes, so each host session gets its own
// "epoch": a fresh Link over the same device, handed to onLink as a TCP
// listener hands over an accepted socket. An epoch ends when
//   * the device reads EOF (virtio-serial: the host side disconnected) and
//     still reports the hang-up a short pause later (an EOF read just as
//     the next host attaches is not a disconnect: the guest can see that
//     host's first bytes before it learns the host is there), or
//   * a new host's Hello (not a repeat of the one that began the epoch)
//     arrives on an epoch that already shook hands: the host reconnected
//     without us seeing it (a UART has no hang-up), so the old session is
//     torn down and the Hello, with what was read behind it, starts the
//     next one, or
//   * its session closed itself (a protocol error); the line stays served.
// Junk left from a torn session is skipped by the resynchronising decoder.
// After a hang-up the port is read again only once a host is back
// (peer-wait.ts): until then it would read EOF at once, again and again.
import fs from "node:fs";
import path from "node:path";
import type { Endpoint } from "./endpoint.js";
import { fileLink } from "./file-link.js";
import { encodeFrame } from "./frame.js";
import { hungUp, makeRawLine } from "./libc.js";
import { LinkEvents, type Link } from "./link.js";
import type { Listener, ListenOptions } from "./listen.js";
import { nextSignal, untilPeer } from "./peer-wait.js";
import type { Frame } from "./wire.js";

// How long after an EOF the port must still report the hang-up to end the
// session. Short, because the next host may be waiting (its Hello is
// repeated, so nothing is lost); not zero, because an EOF read just as a
// host attaches is no disconnect.
const REOPEN_DELAY_MS = 100;
const RETRY_MS = 1000;

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

/** Serves one serial endpoint until closed: waits for its device, reopens it after a hang-up, never throws. */
export function listenSerial(ep: Endpoint, onLink: (link: Link) => void, opts: ListenOptions = {}): Listener {
  let closed = false;
  let waitingReported = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let device: Link | undefined;
  const later = (ms: number) => {
    if (!closed) timer = setTimeout(open, ms);
  };
  const open = () => {
    const dev = devicePath(ep);
    if (!dev || !fs.existsSync(dev)) {
      if (!waitingReported) opts.report?.(`device ${dev ?? "for this port"} not present yet; retrying`);
      waitingReported = true;
      return later(RETRY_MS);
    }
    let fd: number;
    try {
      fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
      if (ep.kind === "serial") makeRawLine(fd, ep.baud);
    } catch (err) {
      opts.report?.(`cannot open ${dev}: ${(err as Error).message}`);
      return later(RETRY_MS);
    }
    device = runEpochs(fd, dev, onLink, () => later(REOPEN_DELAY_MS));
  };
  open();
  return {
    endpoint: ep,
    close: async () => {
      closed = true;
      clearTimeout(timer);
      device?.close();
    },
  };
}

/** Opens the device's link and splits it into per-session links; returns the device's own link. */
function runEpochs(fd: number, where: string, onLink: (link: Link) => void, onDeviceClosed: () => void): Link {
  // EOF ends the host's session; the fd stays open for the next one.
  const device = fileLink(fd, where, {
    onEof: () => epochs.hangUp(),
    rearmMs: REOPEN_DELAY_MS,
    stillGone: () => hungUp(fd),
    untilPeer: (abort) => untilPeer(fd, abort),
    // A host attaching now signals: no need to sit out the whole pause.
    pause: (ms, abort) => nextSignal(fd, abort, ms),
  });
  const epochs = new Epochs(device, onLink, onDeviceClosed);
  return device;
}

/** One device's sequence of host sessions: each gets a link of its own, handed to onLink. */
export class Epochs {
  private current: Epoch | undefined;

  constructor(
    private readonly device: Link,
    private readonly onLink: (link: Link) => void,
    onDeviceClosed: () => void,
  ) {
    device.onData((b) => this.current?.feed(b));
    device.onDrain(() => this.current?.drain());
    device.onClose(() => {
      this.current?.end();
      this.current = undefined;
      onDeviceClosed();
    });
    this.start();
  }

  /** The host left: its session ends and the next one waits for the next host. */
  hangUp(): void {
    this.current?.end();
    this.start();
  }

  private start(firstBytes?: Uint8Array): void {
    const epoch = new Epoch(
      this.device,
      // The Hello that began a new host's session, already decoded by the
      // old session: framed again, it is the new session's first input,
      // and the bytes the old session read behind it follow.
      (hello, rest) => {
        this.current?.end();
        this.start(Buffer.concat([encodeFrame({ hello }), rest]));
      },
      () => {
        if (this.current === epoch) this.start();
      },
    );
    this.current = epoch;
    this.onLink(epoch.link);
    if (firstBytes) epoch.feed(firstBytes);
  }
}

/** One host session on a serial device. */
class Epoch {
  private readonly events = new LinkEvents();
  private ended = false;
  /** This session stopped the device's reading (its answers backed up). */
  private paused = false;
  readonly link: Link;

  constructor(
    device: Link,
    readonly onRehello: (hello: NonNullable<Frame["hello"]>, rest: Uint8Array) => void,
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
      pause: () => {
        if (this.ended) return;
        this.paused = true;
        device.pause?.();
      },
      resume: () => {
        if (!this.paused) return;
        this.paused = false;
        device.resume?.();
      },
      ...this.events.register,
      rehello: (hello, rest) => this.onRehello(hello, rest),
    };
  }

  feed(b: Uint8Array): void {
    if (!this.ended) this.events.data(b);
  }

  drain(): void {
    if (!this.ended) this.events.drain();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    // A session that ends while it holds the device paused would leave the
    // next host unheard.
    this.link.resume?.();
    this.events.close();
  }
}
