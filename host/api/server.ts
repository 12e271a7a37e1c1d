// fractal-host serve: the REST API (./routes.ts), its WebSockets for
// interactive exec and attach, streamed logs, and the web console, on one
// Bun server. Every /v1 request is authenticated (./auth.ts) before it is
// routed; errors are JSON with a stable code (./errors.ts).
import type { Server, ServerWebSocket } from "bun";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { RemoteProcess } from "../client.js";
import { AgentPool } from "./agents.js";
import { ApiAuth, COOKIE } from "./auth.js";
import { consoleAsset } from "./console-assets.js";
import { asApiError, errorBody, httpStatus } from "./errors.js";
import { openApiDocument } from "./openapi.js";
import { exitJson, json, matchRoute, type RouteContext } from "./routes.js";
import { validateBody } from "./validate.js";

export interface ServeOptions {
  hostname: string;
  port: number;
  token: string;
  kernel: string;
  initrd: string;
  agentImage?: string;
  keyFile?: string;
}

interface Socket {
  vm: string;
  kind: "exec" | "attach";
  argv: string[];
  container: string;
  cols: number;
  rows: number;
  proc?: RemoteProcess;
  /** Input that came before the process was there. */
  early: (Uint8Array | string)[];
  drained?: () => void;
}

const MAX_BODY = 1 << 20;
const HIGH_WATER = 1 << 20;

function fail(err: unknown): Response {
  const e = asApiError(err);
  return json(httpStatus(e), errorBody(e));
}

export function startServer(o: ServeOptions): Server<Socket> {
  const auth = new ApiAuth(o.token);
  const pool = new AgentPool(o.keyFile);
  const defaults = { kernel: o.kernel, initrd: o.initrd, agentImage: o.agentImage, keyFile: o.keyFile };
  const doc = openApiDocument();

  const server = Bun.serve<Socket>({
    hostname: o.hostname,
    port: o.port,
    idleTimeout: 0,
    async fetch(req, srv) {
      const url = new URL(req.url);
      try {
        if (url.pathname === "/login") {
          const session = auth.login(url.searchParams.get("token") ?? "");
          return new Response(null, { status: 303, headers: { location: "/", "set-cookie": `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/` } });
        }
        if (!url.pathname.startsWith("/v1/")) {
          const asset = consoleAsset(url.pathname);
          return asset ?? json(404, errorBody(new FractalError(ErrorCode.NOT_FOUND, `no such page: ${url.pathname}`)));
        }
        const upgrade = req.headers.get("upgrade")?.toLowerCase() === "websocket";
        auth.check(req, url, upgrade);
        if (url.pathname === "/v1/openapi.json" && req.method === "GET") return json(200, doc);
        const m = matchRoute(req.method, url.pathname);
        if (!m) {
          const known = matchRoute("GET", url.pathname) ?? matchRoute("POST", url.pathname) ?? matchRoute("DELETE", url.pathname);
          return json(known ? 405 : 404, errorBody(new FractalError(known ? ErrorCode.INVALID_ARGUMENT : ErrorCode.NOT_FOUND, known ? `${req.method} is not allowed on ${url.pathname}` : `no such endpoint: ${req.method} ${url.pathname}`)));
        }
        if (m.route.websocket) {
          if (!upgrade) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${url.pathname} is a WebSocket endpoint: send Upgrade: websocket`);
          const data = socketData(m.route.operationId === "attachInteractive" ? "attach" : "exec", m.params, url.searchParams);
          if (srv.upgrade(req, { data })) return undefined;
          throw new FractalError(ErrorCode.INVALID_ARGUMENT, "WebSocket upgrade failed");
        }
        if (m.route.operationId === "containerLogs") return await logs(pool, m.params, url.searchParams, req);
        let body: unknown;
        if (m.route.body) {
          const text = await req.text();
          if (text.length > MAX_BODY) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `the request body is larger than ${MAX_BODY} bytes`);
          try {
            body = text === "" ? {} : JSON.parse(text);
          } catch {
            throw new FractalError(ErrorCode.INVALID_ARGUMENT, "the request body is not JSON");
          }
          validateBody(m.route.body, body);
        }
        const ctx: RouteContext = { params: m.params, query: url.searchParams, body, pool, defaults };
        return await m.route.handle!(ctx);
      } catch (err) {
        return fail(err);
      }
    },
    websocket: {
      async open(ws) {
        try {
          await openProcess(ws, pool);
        } catch (err) {
          const e = asApiError(err);
          ws.send(JSON.stringify({ type: "error", ...errorBody(e) }));
          ws.close(1011, e.message.slice(0, 120));
        }
      },
      message(ws, msg) {
        const p = ws.data.proc;
        if (!p) {
          ws.data.early.push(typeof msg === "string" ? msg : new Uint8Array(msg));
          return;
        }
        input(p, msg);
      },
      drain(ws) {
        ws.data.drained?.();
      },
      close(ws) {
        const p = ws.data.proc;
        // As ssh does when its connection drops: the exec'd terminal gets SIGHUP. An attach only lets go.
        if (p && ws.data.kind === "exec") void p.signal(1).catch(() => {});
      },
    },
  });
  return server;
}

function socketData(kind: "exec" | "attach", params: Record<string, string>, q: URLSearchParams): Socket {
  const size = (name: string, dflt: number) => {
    const v = Number(q.get(name) ?? dflt);
    if (!Number.isInteger(v) || v < 1 || v > 1000) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${name} must be 1-1000`);
    return v;
  };
  const argv = q.getAll("cmd");
  return { vm: params.vm!, kind, argv: argv.length > 0 ? argv : ["sh"], container: params.container ?? q.get("container") ?? "", cols: size("cols", 80), rows: size("rows", 24), early: [] };
}

function input(p: RemoteProcess, msg: string | Uint8Array | Buffer): void {
  if (typeof msg !== "string") {
    void p.write(new Uint8Array(msg)).catch(() => {});
    return;
  }
  try {
    const m = JSON.parse(msg) as { type?: string; cols?: number; rows?: number; data?: string };
    if (m.type === "resize" && m.cols && m.rows) void p.resize(m.cols, m.rows).catch(() => {});
    else if (m.type === "input" && typeof m.data === "string") void p.write(Buffer.from(m.data)).catch(() => {});
  } catch {
    // not a control message: ignored
  }
}

async function openProcess(ws: ServerWebSocket<Socket>, pool: AgentPool): Promise<void> {
  const d = ws.data;
  const client = await pool.get(d.vm);
  const p =
    d.kind === "exec"
      ? await client.exec({ argv: d.argv, tty: { cols: d.cols, rows: d.rows, term: "xterm-256color" }, stdin: true, container: d.container || undefined })
      : await client.attach(d.container, { stdin: true, logs: false, follow: true });
  d.proc = p;
  if (d.kind === "attach") void p.resize(d.cols, d.rows).catch(() => {});
  const send = async (chunk: Uint8Array) => {
    if (ws.readyState !== 1) return;
    ws.sendBinary(chunk);
    // The browser reads slower than the process writes: hold the process back.
    if (ws.getBufferedAmount() > HIGH_WATER) await new Promise<void>((r) => (d.drained = r));
  };
  p.onStdout(send);
  // A terminal has one output; an attach also carries a non-terminal container's stderr.
  if (d.kind === "attach") p.onStderr(send);
  for (const m of d.early.splice(0)) input(p, m);
  void (async () => {
    const st = await p.wait().catch(() => undefined);
    await p.outputEnded().catch(() => {});
    if (ws.readyState === 1) {
      ws.send(JSON.stringify({ type: "exit", ...(st ? exitJson(st) : { exitCode: 255, signal: null, oomKilled: false }) }));
      ws.close(1000, "exited");
    }
  })();
}

/** Logs as text, or as server-sent events when asked; with follow, until the container exits. */
async function logs(pool: AgentPool, params: Record<string, string>, q: URLSearchParams, req: Request): Promise<Response> {
  const client = await pool.get(params.vm!);
  const follow = q.get("follow") === "true";
  const sse = (req.headers.get("accept") ?? "").includes("text/event-stream");
  const p = await client.attach(params.container!, { logs: true, follow });
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    start(ctl) {
      const put = (kind: "stdout" | "stderr") => (chunk: Uint8Array) => {
        try {
          ctl.enqueue(sse ? enc.encode(`event: ${kind}\ndata: ${JSON.stringify(Buffer.from(chunk).toString())}\n\n`) : chunk);
        } catch {
          // the client went away
        }
      };
      p.onStdout(put("stdout"));
      p.onStderr(put("stderr"));
      void (async () => {
        await p.outputEnded().catch(() => {});
        try {
          if (sse && follow) {
            const st = await client.containerWait(params.container!).catch(() => undefined);
            if (st) ctl.enqueue(enc.encode(`event: exit\ndata: ${JSON.stringify(exitJson(st))}\n\n`));
          }
          ctl.close();
        } catch {
          // the client went away
        }
      })();
    },
  });
  return new Response(stream, { status: 200, headers: { "content-type": sse ? "text/event-stream" : "text/plain; charset=utf-8", "cache-control": "no-store" } });
}
