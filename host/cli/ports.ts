// `fractal-host port-forward`, like `kubectl port-forward`: a host port
// whose connections are carried over the agent link, as streams, to a port
// in the guest or in a container. No guest network is involved, so it works
// over every transport, virtio-serial and vsock included. This process
// holds the host port: forwarding lasts as long as it runs (or until the
// named container exits).
import net from "node:net";
import type { AgentClient } from "../client.js";
import { flag, parseFlags, usageError, value } from "./args.js";

export const portForwardHelp = `usage: fractal-host port-forward [--vm NAME] [--address ADDR] [CONTAINER] [HOSTPORT:]PORT...

Listens on ADDR:HOSTPORT (default 127.0.0.1, HOSTPORT = PORT; 0 picks a free
port) and carries each connection to PORT in the guest, over the agent
connection itself (any transport; the guest needs no network). With
CONTAINER, the port is the container's (containers share the guest's
network) and forwarding ends when it exits. Runs until interrupted.

      --address ADDR  the host address to listen on (default 127.0.0.1)
      --vm NAME       the VM
  -h, --help          this text
`;

export interface PortForwardCommand {
  vm?: string;
  address: string;
  container?: string;
  ports: { host: number; guest: number }[];
}

function port(s: string, what: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 65535) throw usageError("port-forward", `bad ${what} port "${s}"`);
  return n;
}

/** `[HOSTPORT:]PORT`, as port-forward and run -p take it. */
export function parsePortSpec(spec: string, command: string): { host: number; guest: number } {
  const m = spec.match(/^(?:(\d+):)?(\d+)$/);
  if (!m) throw usageError(command, `bad port "${spec}": use [HOSTPORT:]PORT`);
  const guest = port(m[2]!, "guest");
  if (guest === 0) throw usageError(command, "the guest port cannot be 0");
  return { host: m[1] === undefined ? guest : port(m[1], "host"), guest };
}

export function parsePortForward(args: string[]): PortForwardCommand | "help" {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "address", value: true }, { long: "help", short: "h" }], "port-forward");
  if (flag(p, "help")) return "help";
  const rest = [...p.rest];
  const container = rest.length > 0 && !/^\d+(:\d+)?$/.test(rest[0]!) ? rest.shift() : undefined;
  if (rest.length === 0) throw usageError("port-forward", "no port given ([HOSTPORT:]PORT)");
  const ports = rest.map((spec) => parsePortSpec(spec, "port-forward"));
  return { vm: value(p, "vm"), address: value(p, "address") ?? "127.0.0.1", container, ports };
}

/** Listens on each host port and carries its connections to the guest port (in `container`, if given). */
export function listenForwards(client: AgentClient, cmd: Omit<PortForwardCommand, "vm">, say = (line: string) => void process.stdout.write(`${line}\n`)): Promise<net.Server[]> {
  return Promise.all(
    cmd.ports.map(
      ({ host, guest }) =>
        new Promise<net.Server>((resolve, reject) => {
          // Half-open: a client that ends its input may still be waiting for the answer.
          const server = net.createServer({ allowHalfOpen: true }, (sock) => {
            client.portForward(sock, { port: guest, container: cmd.container }).catch((err: Error) => {
              process.stderr.write(`fractal-host: port-forward: ${err.message}\n`);
              sock.destroy();
            });
          });
          server.once("error", (err) => reject(usageError("port-forward", `cannot listen on ${cmd.address}:${host}: ${err.message}`)));
          server.listen(host, cmd.address, () => {
            const a = server.address() as net.AddressInfo;
            say(`Forwarding from ${cmd.address}:${a.port} -> ${cmd.container ? `${cmd.container}:` : ""}${guest}`);
            resolve(server);
          });
        }),
    ),
  );
}

/** Serves the forwards until interrupted, the agent connection ends, or the container exits. */
export async function runPortForward(client: AgentClient, cmd: PortForwardCommand): Promise<number> {
  const servers = await listenForwards(client, cmd);
  const ended = await new Promise<number>((resolve) => {
    client.session.onClose((err) => {
      process.stderr.write(`fractal-host: port-forward: the agent connection ended (${err.message})\n`);
      resolve(1);
    });
    if (cmd.container) {
      const name = cmd.container;
      client.containerWait(name).then(
        () => {
          process.stderr.write(`fractal-host: port-forward: container ${name} exited; forwarding ends\n`);
          resolve(0);
        },
        (err: Error) => {
          process.stderr.write(`fractal-host: port-forward: ${err.message}\n`);
          resolve(125);
        },
      );
    }
    for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => resolve(0));
  });
  for (const s of servers) s.close();
  return ended;
}
