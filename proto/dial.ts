// Client side of every transport: an endpoint URL in, a connected Link out.
import net from "node:net";
import WebSocket from "ws";
import { parseEndpoint, formatEndpoint, type Endpoint } from "./endpoint.js";
import { ErrorCode, FractalError } from "./errors.js";
import { socketLink, type Link } from "./link.js";
import { wsLink } from "./ws-link.js";

export const DIAL_TIMEOUT_MS = 10_000;

export async function dial(url: string | Endpoint, timeoutMs = DIAL_TIMEOUT_MS): Promise<Link> {
  const ep = typeof url === "string" ? parseEndpoint(url) : url;
  const where = formatEndpoint(ep);
  switch (ep.kind) {
    case "tcp":
      return socketLink(await connectSocket(net.connect({ host: ep.host, port: ep.port }), where, timeoutMs), `tcp ${ep.host}:${ep.port}`);
    case "unix":
      return socketLink(await connectSocket(net.connect({ path: ep.path }), where, timeoutMs), `unix ${ep.path}`);
    case "ws": {
      const ws = new WebSocket(`ws://${ep.host.includes(":") ? `[${ep.host}]` : ep.host}:${ep.port}${ep.path}`);
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
      return wsLink(ws, `ws ${ep.host}:${ep.port}`);
    }
  }
}

function connectSocket(sock: net.Socket, where: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(unreachable(where, "timed out"));
    }, timeoutMs);
    sock.once("connect", () => {
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

function unreachable(where: string, why: string): FractalError {
  return new FractalError(ErrorCode.UNAVAILABLE, `cannot connect to ${where}: ${why}`);
}
