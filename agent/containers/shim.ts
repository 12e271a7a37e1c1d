// The agent's end of the long-lived container shim (fractal-ns -shimd,
// initramfs/nshelper/shimd.go): one process for every container, which
// holds their stdio FIFOs and records their exits, so containers outlive the
// agent. The agent starts it the first time a container needs it; an agent
// restarted by the supervisor finds the one already serving on SOCKET.
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { NS_HELPER } from "../../proto/guest.js";
import { lineSplitter } from "../../proto/lines.js";
import { log } from "../log.js";

export const SHIM_SOCKET = "/run/fractal/shimd.sock";

export interface ShimStart {
  bundle: string;
  /** The container reads the stdin FIFO (else /dev/null). */
  stdin: boolean;
  /** Where the runtime sends the terminal's master (its --console-socket). */
  console?: string;
  argv: string[];
}

interface Reply {
  id: number;
  pid?: number;
  error?: string;
}

type Request = { op: "start" } & ShimStart | { op: "close-stdin"; bundle: string };

export class ShimClient {
  private conn?: Promise<net.Socket>;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private gone: Promise<void> = new Promise(() => {});

  constructor(private readonly socket = SHIM_SOCKET) {}

  /** Starts the runtime for a container; resolves with the runtime's pid once it runs. */
  async start(s: ShimStart): Promise<number> {
    return (await this.request({ op: "start", ...s })).pid ?? 0;
  }

  /** The shim drops its writer of the stdin FIFO, so the container reads EOF once ours is closed too. */
  async closeStdin(bundle: string): Promise<void> {
    await this.request({ op: "close-stdin", bundle });
  }

  /** Settles when the connection in use ends: a shim that died took its containers' statuses with it. */
  lost(): Promise<void> {
    return this.gone;
  }

  private async request(r: Request): Promise<Reply> {
    const sock = await this.connection();
    const id = this.nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      sock.write(`${JSON.stringify({ id, ...r })}\n`);
    });
    if (reply.error) throw new FractalError(ErrorCode.INTERNAL, reply.error);
    return reply;
  }

  private connection(): Promise<net.Socket> {
    this.conn ??= this.open().catch((err: unknown) => {
      this.conn = undefined;
      throw err;
    });
    return this.conn;
  }

  private async open(): Promise<net.Socket> {
    let sock: net.Socket;
    try {
      sock = await dial(this.socket);
    } catch {
      await launch(this.socket);
      sock = await dial(this.socket);
    }
    sock.setEncoding("utf8");
    sock.on(
      "data",
      lineSplitter((line) => {
        let r: Reply;
        try {
          r = JSON.parse(line) as Reply;
        } catch {
          log("warn", `container shim: unreadable reply ${JSON.stringify(line)}`);
          return;
        }
        const p = this.pending.get(r.id);
        this.pending.delete(r.id);
        if (p) p.resolve(r);
        else log("warn", `container shim: ${r.error ?? `a reply to no request (${r.id})`}`);
      }),
    );
    this.gone = new Promise((resolve) => {
      sock.once("close", () => {
        log("warn", "container shim: its connection closed");
        this.conn = undefined;
        const err = new FractalError(ErrorCode.INTERNAL, "the container shim went away");
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        resolve();
      });
    });
    sock.on("error", () => {});
    return sock;
  }
}

function dial(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

/** Starts the shim in its own session; resolves once it listens (its "ready" line). */
async function launch(socket: string): Promise<void> {
  // Its complaints go where ours go; stdout carries only the ready line.
  const p = Bun.spawn([NS_HELPER, "-shimd", socket], { stdio: ["ignore", "pipe", "inherit"], env: process.env as Record<string, string> });
  const reader = p.stdout.getReader();
  let said = "";
  while (!said.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    said += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  if (!said.startsWith("ready")) throw new FractalError(ErrorCode.INTERNAL, `the container shim did not start (${NS_HELPER} -shimd exited ${await p.exited})`);
  log("info", `container shim started (pid ${p.pid})`);
}

/** The guest's one shim, shared by every container. */
export const containerShim = new ShimClient();
