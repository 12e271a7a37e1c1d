// QEMU's machine protocol (QMP) on the VM's unix socket (qmp.sock in its
// state directory): one JSON object per line, a greeting, then
// `qmp_capabilities` before any command. It is how the host learns that
// QEMU exited (the socket closes) without polling its pid, and how it quits
// QEMU cleanly. QMP takes one client at a time; a second one waits in the
// socket's backlog until the first leaves.
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { lineSplitter } from "../../proto/lines.js";

interface Reply {
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
}

/** An event QEMU announced: its name and its data (which QMP's schema defines per event). */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

export class Qmp {
  private readonly waiting: ((r: Reply) => void)[] = [];
  private readonly listeners: ((e: QmpEvent) => void)[] = [];
  /** Resolves when QEMU closes the socket: it exited (or is exiting). */
  readonly closed: Promise<void>;

  private constructor(private readonly sock: net.Socket) {
    this.closed = new Promise((resolve) => sock.once("close", () => resolve()));
    sock.on("error", () => {});
    sock.setEncoding("utf8");
    sock.on(
      "data",
      lineSplitter((text) => {
        const line = text.trim();
        if (line === "") return;
        const msg = JSON.parse(line) as Reply & { QMP?: unknown }; // QMP speaks JSON objects only
        // Events (SHUTDOWN, STOP, ...) and the greeting answer no command.
        if (msg.event !== undefined) {
          const e = { event: msg.event, data: msg.data ?? {} };
          for (const l of this.listeners) l(e);
          return;
        }
        if (msg.QMP !== undefined) return;
        this.waiting.shift()?.(msg);
      }),
    );
  }

  /** Connects and negotiates; rejects if nothing listens (QEMU gone) or it does not answer in time. */
  static async connect(socketPath: string, timeoutMs = 5000): Promise<Qmp> {
    const sock = net.connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => (sock.destroy(), reject(new FractalError(ErrorCode.UNAVAILABLE, `QMP ${socketPath}: no answer`))), timeoutMs);
      sock.once("connect", () => (clearTimeout(timer), resolve()));
      sock.once("error", (err) => (clearTimeout(timer), reject(new FractalError(ErrorCode.UNAVAILABLE, `QMP ${socketPath}: ${err.message}`))));
    });
    const q = new Qmp(sock);
    // A connection in the backlog (another client holds QMP) or a QEMU
    // whose main loop is stuck would never answer: bounded like the connect.
    await q.execute("qmp_capabilities", undefined, timeoutMs);
    return q;
  }

  /** Runs one command; resolves with its return value, rejects with its error, if QEMU went away, or after `timeoutMs`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    return new Promise((resolve, reject) => {
      // Replies carry no id: after a lost one the connection cannot be trusted, so it ends.
      const timer = setTimeout(() => (this.sock.destroy(), reject(new FractalError(ErrorCode.UNAVAILABLE, `QMP ${command}: no answer within ${timeoutMs} ms`))), timeoutMs);
      const gone = () => (clearTimeout(timer), reject(new FractalError(ErrorCode.UNAVAILABLE, `QMP: QEMU went away during ${command}`)));
      void this.closed.then(gone);
      this.waiting.push((r) => (clearTimeout(timer), r.error ? reject(new FractalError(ErrorCode.INTERNAL, `QMP ${command}: ${r.error.desc}`)) : resolve(r.return)));
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
    });
  }

  /** Calls `listener` with every event QEMU sends from now on. */
  onEvent(listener: (e: QmpEvent) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * Resolves `opened` with true when the guest opens the virtio-serial port
 * with device id `portId` (QEMU's VSERPORT_CHANGE event): the agent opens
 * its port when it starts serving. With false when QMP cannot be had or
 * closes first (QEMU exited). Holds QMP (one client at a time) until close().
 */
export function watchPortOpen(socketPath: string, portId: string): { opened: Promise<boolean>; close(): void } {
  let q: Qmp | undefined;
  let closed = false;
  const opened = new Promise<boolean>((resolve) => {
    Qmp.connect(socketPath, 2000).then(
      (c) => {
        if (closed) return c.close();
        q = c;
        c.onEvent((e) => {
          if (e.event === "VSERPORT_CHANGE" && e.data.id === portId && e.data.open === true) resolve(true);
        });
        void c.closed.then(() => resolve(false));
      },
      () => resolve(false),
    );
  });
  return {
    opened,
    close: () => {
      closed = true;
      q?.close();
    },
  };
}

/**
 * Resolves true once QEMU has exited, false if it still runs after `ms`
 * (Infinity: wait as long as it runs).
 * Only the socket is needed, not a QMP conversation: a connection waiting
 * in the backlog (another client holds QMP) is closed all the same when
 * QEMU goes, and nothing listening means it is gone already.
 */
export function qemuExited(socketPath: string, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const timer =
      ms === Infinity
        ? undefined
        : setTimeout(() => {
            sock.destroy();
            resolve(false);
          }, ms);
    const gone = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(true);
    };
    sock.on("error", gone);
    sock.on("close", gone);
    sock.on("data", () => {}); // the greeting; reading keeps the close visible
  });
}

/**
 * What QEMU says a guest is doing, for a boot that never answered: its run
 * state and where each vCPU is. An empty console cannot tell a kernel
 * spinning early in boot from one idle and waiting on a device; this can.
 * Never throws: "" when QMP does not answer.
 */
export async function guestSnapshot(socketPath: string): Promise<string> {
  let q: Qmp | undefined;
  try {
    q = await Qmp.connect(socketPath, 2000);
    const status = (await q.execute("query-status", undefined, 2000)) as { status?: string }; // QMP's StatusInfo
    const regs = await q.execute("human-monitor-command", { "command-line": "info registers -a" }, 5000);
    return `QEMU reports the guest ${status.status ?? "in an unknown state"}; ${vcpuSummary(String(regs))}`;
  } catch {
    return "";
  } finally {
    q?.close();
  }
}

/** Each vCPU's mode and instruction pointer from HMP's `info registers -a` (x86's RIP, Arm's PC). */
export function vcpuSummary(regs: string): string {
  const cpus = regs.split(/^(?=CPU#\d+)/m).flatMap((block) => {
    const id = /^CPU#(\d+)/.exec(block)?.[1];
    const pc = /\b(?:RIP|PC)=([0-9a-f]+)/i.exec(block)?.[1];
    if (id === undefined) return [];
    // An x86 AP still waiting for its start-up IPI has no registers to show.
    if (pc === undefined) return [`vCPU ${id} not started`];
    const cpl = /\bCPL=(\d)/.exec(block)?.[1];
    const mode = cpl === undefined ? "" : cpl === "0" ? " in the kernel" : " in user space";
    const halted = /\bHLT=1\b/.test(block) ? " halted" : "";
    return [`vCPU ${id}${halted}${mode} at ${pc.replace(/^0+(?=.)/, "")}`];
  });
  return cpus.length > 0 ? cpus.join(", ") : "no vCPU state";
}
