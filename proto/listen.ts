// Server side of every transport: an endpoint URL in, a stream of Links out.
// A serial line (UART, virtio-serial) has no connections: each host session
// on it is one Link (see serial-listen.ts), so it is a listener like the rest.
import fs from "node:fs";
import type http from "node:http";
import net from "node:net";
import type tls from "node:tls";
import { getSystemErrorMap } from "node:util";
import { parseEndpoint, formatEndpoint, type Endpoint } from "./endpoint.js";
import { ErrorCode, FractalError } from "./errors.js";
import { bunListen, type BunListenTarget } from "./bun-link.js";
import { socketLink, type Link } from "./link.js";

export interface Listener {
  /** The endpoint actually bound (port 0 resolved). */
  readonly endpoint: Endpoint;
  close(): Promise<void>;
}

export interface ListenOptions {
  /** Certificate chain and private key (PEM) for tls:// and wss://. */
  tls?: { cert: string; key: string };
  /** Transient trouble a listener rides out (a serial device not there yet), for the log. */
  report?: (message: string) => void;
}

export async function listen(url: string | Endpoint, onLink: (link: Link) => void, opts: ListenOptions = {}): Promise<Listener> {
  const ep = typeof url === "string" ? parseEndpoint(url) : url;
  switch (ep.kind) {
    case "tcp":
    case "tls": {
      // node:net under Node (the tests' runner), and for TLS.
      if (ep.kind === "tcp" && typeof Bun !== "undefined") return bunListener(ep, { hostname: ep.host, port: ep.port }, onLink);
      const accept = (sock: net.Socket) => onLink({ ...socketLink(sock, `${ep.kind} ${sock.remoteAddress}:${sock.remotePort}`), peer: sock.remoteAddress ?? "" });
      // TLS, HTTP and ws are loaded only by the listeners that need them:
      // evaluating them cost every agent start (a VM's boot) under TCG.
      const server = ep.kind === "tls" ? (await import("node:tls")).createServer(tlsOptions(ep, opts), accept) : net.createServer(accept);
      if (ep.kind === "tls") server.on("tlsClientError", () => {}); // a failed TLS handshake ends that socket only
      await bind(server, ep, () => server.listen(ep.port, ep.host));
      const port = (server.address() as net.AddressInfo).port; // bound TCP servers report AddressInfo
      return { endpoint: { ...ep, port }, close: () => closeServer(server) };
    }
    case "unix": {
      // A socket file left by a previous agent would make bind fail; remove
      // it only if it is a socket, never a regular file a user put there.
      try {
        if (fs.statSync(ep.path).isSocket()) fs.unlinkSync(ep.path);
      } catch {
        // absent: nothing to clean
      }
      let stop: () => Promise<void>;
      if (typeof Bun !== "undefined") {
        stop = bunListener(ep, { unix: ep.path }, onLink).close;
      } else {
        const server = net.createServer((sock) => onLink(socketLink(sock, `unix ${ep.path}`)));
        await bind(server, ep, () => server.listen(ep.path));
        stop = () => closeServer(server);
      }
      // A unix socket needs no key (see AuthMode): only its owner may connect.
      fs.chmodSync(ep.path, 0o600);
      return {
        endpoint: ep,
        close: async () => {
          await stop();
          fs.rmSync(ep.path, { force: true });
        },
      };
    }
    case "ws":
    case "wss": {
      const upgradeOnly = (_req: http.IncomingMessage, res: http.ServerResponse) => {
        res.writeHead(426, { "content-type": "text/plain" }).end("fractal agent: WebSocket upgrade required\n");
      };
      // Only the server this listener needs: node:https (TLS) is not loaded for plain ws://.
      const [server, { WebSocketServer }, { wsLink }] = await Promise.all([
        ep.kind === "wss" ? import("node:https").then((https) => https.createServer(tlsOptions(ep, opts), upgradeOnly)) : import("node:http").then((http) => http.createServer(upgradeOnly)),
        import("ws"),
        import("./ws-link.js"),
      ]);
      const wss = new WebSocketServer({ server, path: ep.path, maxPayload: 16 << 20 });
      wss.on("connection", (ws, req) =>
        onLink({ ...wsLink(ws, `${ep.kind} ${req.socket.remoteAddress}:${req.socket.remotePort}`), peer: req.socket.remoteAddress ?? "" }),
      );
      await bind(server, ep, () => server.listen(ep.port, ep.host));
      const port = (server.address() as net.AddressInfo).port; // bound TCP servers report AddressInfo
      return {
        endpoint: { ...ep, port },
        close: async () => {
          wss.close();
          await closeServer(server);
        },
      };
    }
    case "vsock": {
      const { vsockListenFd } = await import("./vsock.js");
      const fd = vsockListenFd(ep.port);
      const server = net.createServer((sock) => onLink(socketLink(sock, `vsock :${ep.port}`)));
      await bind(server, ep, () => server.listen({ fd }));
      return { endpoint: ep, close: () => closeServer(server) };
    }
    case "serial":
    case "virtio-serial": {
      // Bun-only (file streams on a device), so loaded only when asked for.
      const { listenSerial } = await import("./serial-listen.js");
      return listenSerial(ep, onLink, opts);
    }
    case "hvsock":
      // Firecracker's hybrid vsock is a host-side unix socket a client dials.
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${formatEndpoint(ep)} cannot be listened on: a guest listens on vsock://:PORT`);
  }
}

/**
 * TCP and unix in Bun (the agent): Bun's own sockets, whose per-connection
 * and per-chunk cost is a fraction of node:net's streams (bun-link.ts).
 */
function bunListener(ep: Extract<Endpoint, { kind: "tcp" | "unix" }>, target: BunListenTarget, onLink: (link: Link) => void): Listener {
  let l;
  try {
    l = bunListen(target, onLink, (peer, port) => (ep.kind === "unix" ? `unix ${ep.path}` : `${ep.kind} ${peer}:${port}`));
  } catch (err) {
    // Said as node:net says it ("listen EADDRINUSE: address already in
    // use"): Bun's own message is only "Failed to listen at HOST".
    const e = err as Error & { code?: string };
    const why = e.code ? [...getSystemErrorMap().values()].find(([name]) => name === e.code)?.[1] : undefined;
    throw new FractalError(ErrorCode.UNAVAILABLE, `cannot listen on ${formatEndpoint(ep)}: ${e.code ? `listen ${e.code}${why ? `: ${why}` : ""}` : e.message}`);
  }
  const { port, stop } = l;
  return { endpoint: ep.kind === "unix" ? ep : { ...ep, port }, close: async () => stop() };
}

function tlsOptions(ep: Endpoint, opts: ListenOptions): tls.TlsOptions {
  if (!opts.tls) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${formatEndpoint(ep)} needs a certificate and key (--tls-cert, --tls-key)`);
  return { cert: opts.tls.cert, key: opts.tls.key, minVersion: "TLSv1.2" };
}

function bind(server: net.Server, ep: Endpoint, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (err) => reject(new FractalError(ErrorCode.UNAVAILABLE, `cannot listen on ${formatEndpoint(ep)}: ${err.message}`)));
    server.once("listening", () => {
      // Accept errors after this point (EMFILE, a peer resetting mid-accept)
      // are transient: the server keeps listening, and an unhandled 'error'
      // event would end the whole agent.
      server.on("error", () => {});
      resolve();
    });
    start();
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
