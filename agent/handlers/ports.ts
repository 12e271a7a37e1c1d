// Port forwarding: one TCP connection in the guest per request, joined to
// two of the connection's streams (proto/stream-socket.ts: their credit is
// the flow control, so TCP pushes back on the guest's sender). Containers share
// the guest's network, so a container's port is the guest's; naming the
// container ties the connection to its life.
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import { joinSocket } from "../../proto/stream-socket.js";
import type { PortForwardCommand } from "../commands.js";
import type { ContainerManager } from "../containers/manager.js";

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
    void joinSocket(sock, output, input);
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
