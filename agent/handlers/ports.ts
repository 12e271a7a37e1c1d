// Port forwarding: one TCP connection in the guest per request, joined to
// two of the connection's streams. Flow control is the streams': bytes from
// the socket wait for the client's credit (the socket is paused, so TCP
// pushes back on the guest's sender), and bytes from the client are taken
// from its stream only as fast as the socket accepts them. Containers share
// the guest's network, so a container's port is the guest's; naming the
// container ties the connection to its life.
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import type { PortForwardCommand } from "../commands.js";
import type { ContainerManager } from "../containers/manager.js";

/** Bytes read from the socket that may wait for the client's credit before the socket is paused. */
const MAX_UNSENT = 256 << 10;

export class PortHandlers {
  constructor(
    private readonly session: Session,
    private readonly containers: ContainerManager,
  ) {}

  async forward(f: PortForwardCommand): Promise<ResponseBody> {
    // Open both streams first: the client's bytes may follow the request at once.
    const input = this.session.openIn(f.inStream);
    const output = this.session.openOut(f.outStream);
    let sock: net.Socket;
    try {
      const c = f.container ? this.containers.find(f.container) : undefined;
      if (c && !c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running`);
      sock = await connect(f.host, f.port, c ? ` (container ${c.name} shares the guest's network)` : "");
      if (c) void c.done.then(() => sock.destroy());
    } catch (err) {
      input.reset("port-forward failed");
      output.fail(err as FractalError);
      throw err;
    }
    let unsent = 0;
    sock.on("data", (chunk: Buffer) => {
      unsent += chunk.length;
      if (unsent > MAX_UNSENT) sock.pause();
      output.write(chunk).then(
        () => {
          unsent -= chunk.length;
          if (unsent <= MAX_UNSENT && sock.isPaused()) sock.resume();
        },
        () => sock.destroy(), // the client reset its side
      );
    });
    sock.on("end", () => output.end());
    sock.on("error", () => {});
    sock.on("close", () => {
      output.end();
      input.reset("connection closed");
    });
    input.pipeTo({
      data: (chunk, done) => {
        if (sock.destroyed) return done();
        sock.write(chunk, () => done());
      },
      end: () => sock.end(),
      abort: () => sock.destroy(),
    });
    return { ok: {} };
  }
}

function connect(host: string, port: number, note: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    s.once("connect", () => resolve(s));
    s.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "ECONNREFUSED" ? "nothing listens there" : err.message;
      reject(new FractalError(ErrorCode.UNAVAILABLE, `port-forward: cannot connect to ${host}:${port} in the guest${note}: ${why}`));
    });
  });
}
