// The REST API's routes, one table: each entry's method, path, schemas and
// handler. The OpenAPI document is made from this table (./openapi.ts), so
// the two cannot disagree; the handlers call the same client library the
// CLI does, through one connection per VM (./agents.ts).
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { bootVm, listVms, stopVm } from "../vm/manager.js";
import { imageStoreShare } from "../vm/qemu.js";
import { guestKeyArgs } from "../cli/keys.js";
import type { AgentPool } from "./agents.js";
import { badRequest } from "./errors.js";
import { containerDetail, containerJson, exitJson, vmJson } from "./shapes.js";

export { exitJson } from "./shapes.js";

export interface RouteContext {
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  pool: AgentPool;
  defaults: { kernel: string; initrd: string; agentImage?: string; keyFile?: string };
}

export interface Route {
  method: "GET" | "POST" | "DELETE";
  /** OpenAPI style: /v1/vms/{vm}. */
  path: string;
  operationId: string;
  summary: string;
  /** Component schema of the JSON body. */
  body?: string;
  query?: { name: string; schema: Record<string, unknown>; description: string }[];
  /** Status -> component schema, or a media type for what is not JSON. */
  responses: Record<number, string | { media: string; description: string }>;
  /** WebSocket routes are upgraded by the server, not handled here. */
  websocket?: true;
  handle?(c: RouteContext): Promise<Response>;
}

export const json = (status: number, body: unknown) => Response.json(body, { status });

const vmParam = "{vm}";
const agent = (c: RouteContext) => c.pool.get(c.params.vm!);
const body = <T>(c: RouteContext) => (c.body ?? {}) as T;

const MAX_EXEC_OUTPUT = 16 << 20;

export const routes: Route[] = [
  {
    method: "GET",
    path: "/v1/vms",
    operationId: "listVms",
    summary: "List VMs",
    responses: { 200: "VmList" },
    handle: async () => json(200, { vms: listVms().map(vmJson) }),
  },
  {
    method: "POST",
    path: "/v1/vms",
    operationId: "bootVm",
    summary: "Boot a VM and wait for its agent",
    body: "BootRequest",
    responses: { 201: "Vm", 400: "Error" },
    handle: async (c) => {
      const b = body<{ name: string; images?: string; memMiB?: number; cpus?: number }>(c);
      const rec = await bootVm({
        name: b.name,
        kernel: c.defaults.kernel,
        initrd: c.defaults.initrd,
        agentImage: c.defaults.agentImage,
        memMiB: b.memMiB ?? 1024,
        cpus: b.cpus ?? 2,
        tcp: 0,
        shares: b.images ? [imageStoreShare(path.resolve(b.images))] : [],
        virtiofs: [],
        // The user's key, as boot authorises it: this server then reaches the agent over TCP.
        append: await guestKeyArgs([], c.defaults.keyFile),
        keyFile: c.defaults.keyFile,
      });
      return json(201, vmJson({ record: rec, state: "running" }));
    },
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/stop`,
    operationId: "stopVm",
    summary: "Power a VM off",
    responses: { 200: "StopResult", 404: "Error" },
    handle: async (c) => {
      c.pool.drop(c.params.vm!);
      return json(200, { name: c.params.vm, how: await stopVm(c.params.vm!, 20_000, c.defaults.keyFile) });
    },
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/images`,
    operationId: "listImages",
    summary: "List the images in a VM's store",
    responses: { 200: "ImageList", 404: "Error" },
    handle: async (c) => json(200, await (await agent(c)).images()),
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/containers`,
    operationId: "listContainers",
    summary: "List containers",
    query: [{ name: "all", schema: { type: "boolean" }, description: "exited ones too" }],
    responses: { 200: "ContainerList", 404: "Error" },
    handle: async (c) => json(200, { containers: (await (await agent(c)).containers(c.query.get("all") === "true")).map(containerJson) }),
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/containers`,
    operationId: "runContainer",
    summary: "Create and start a container (detached)",
    body: "RunRequest",
    responses: { 201: "RunResult", 400: "Error", 404: "Error", 409: "Error" },
    handle: async (c) => {
      const b = body<{ image: string; name?: string; command?: string[]; env?: Record<string, string>; cwd?: string; user?: string; tty?: boolean; interactive?: boolean; memoryBytes?: number; cpus?: number; pids?: number }>(c);
      const r = await (await agent(c)).run({
        image: b.image,
        name: b.name,
        command: b.command,
        env: b.env,
        cwd: b.cwd,
        user: b.user,
        tty: b.tty ? { cols: 80, rows: 24, term: "xterm-256color" } : undefined,
        interactive: b.interactive ?? b.tty ?? false,
        detach: true,
        memoryBytes: b.memoryBytes,
        cpus: b.cpus,
        pids: b.pids,
      });
      return json(201, { id: r.id, name: r.name });
    },
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/containers/{container}`,
    operationId: "inspectContainer",
    summary: "A container and its stack of images",
    responses: { 200: "ContainerDetail", 404: "Error" },
    handle: async (c) => json(200, await containerDetail(await agent(c), c.params.container!)),
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/containers/{container}/stop`,
    operationId: "stopContainer",
    summary: "SIGTERM, then SIGKILL after the grace period",
    query: [{ name: "timeout", schema: { type: "integer", minimum: 0 }, description: "grace period in seconds (default 10)" }],
    responses: { 200: "Exit", 404: "Error" },
    handle: async (c) => {
      const t = c.query.get("timeout");
      if (t !== null && !/^\d+$/.test(t)) throw badRequest(`timeout "${t}" is not a number of seconds`);
      return json(200, exitJson(await (await agent(c)).stop(c.params.container!, t === null ? 10 : Number(t))));
    },
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/containers/{container}/kill`,
    operationId: "killContainer",
    summary: "Signal a container's main process",
    body: "KillRequest",
    responses: { 204: "", 404: "Error", 409: "Error" },
    handle: async (c) => {
      await (await agent(c)).kill(c.params.container!, body<{ signal?: number }>(c).signal ?? 9);
      return new Response(null, { status: 204 });
    },
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/containers/{container}/wait`,
    operationId: "waitContainer",
    summary: "Wait for a container to exit",
    responses: { 200: "Exit", 404: "Error" },
    handle: async (c) => json(200, exitJson(await (await agent(c)).containerWait(c.params.container!))),
  },
  {
    method: "DELETE",
    path: `/v1/vms/${vmParam}/containers/{container}`,
    operationId: "removeContainer",
    summary: "Delete a container",
    query: [{ name: "force", schema: { type: "boolean" }, description: "kill it first if it runs" }],
    responses: { 204: "", 404: "Error", 400: "Error" },
    handle: async (c) => {
      await (await agent(c)).remove(c.params.container!, c.query.get("force") === "true");
      return new Response(null, { status: 204 });
    },
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/containers/{container}/logs`,
    operationId: "containerLogs",
    summary: "A container's output: plain text, or server-sent events (Accept: text/event-stream)",
    query: [{ name: "follow", schema: { type: "boolean" }, description: "keep streaming until the container exits" }],
    responses: { 200: { media: "text/plain", description: "stdout and stderr as they were written; with Accept: text/event-stream, events `stdout`, `stderr` (data: the text as a JSON string) and `exit` (data: an Exit)" }, 404: "Error" },
  },
  {
    method: "POST",
    path: `/v1/vms/${vmParam}/exec`,
    operationId: "exec",
    summary: "Run a command without a terminal, in the guest or a container; its output and exit status in one response",
    body: "ExecRequest",
    responses: { 200: "ExecResult", 400: "Error", 404: "Error" },
    handle: async (c) => {
      const b = body<{ argv: string[]; env?: Record<string, string>; cwd?: string; container?: string; stdin?: string }>(c);
      // The answer waits for the exit anyway: ask for it with the exec.
      const p = await (await agent(c)).exec({ argv: b.argv, env: b.env, cwd: b.cwd, container: b.container, stdin: b.stdin !== undefined, waitAhead: true });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const take = (to: Buffer[]) => (chunk: Uint8Array) => {
        size += chunk.length;
        if (size <= MAX_EXEC_OUTPUT) to.push(Buffer.from(chunk));
      };
      p.onStdout(take(out));
      p.onStderr(take(err));
      if (b.stdin !== undefined) {
        await p.write(Buffer.from(b.stdin));
        p.closeStdin();
      }
      const st = await p.wait();
      await p.outputEnded();
      if (size > MAX_EXEC_OUTPUT) throw new FractalError(ErrorCode.RESOURCE_EXHAUSTED, `the command wrote ${size} bytes, more than the ${MAX_EXEC_OUTPUT} one response carries: use the WebSocket exec`);
      const e = exitJson(st);
      return json(200, { exitCode: e.exitCode, signal: e.signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    },
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/exec/ws`,
    operationId: "execInteractive",
    summary: "WebSocket: an interactive process on a terminal. Query: cmd (repeatable), container, cols, rows. Binary messages both ways carry the terminal's bytes; text messages from the client are JSON {\"type\":\"resize\",\"cols\":N,\"rows\":N}; the last message from the server is JSON {\"type\":\"exit\",\"exitCode\":N}.",
    query: [
      { name: "cmd", schema: { type: "string" }, description: "the command and its arguments, one per parameter (default sh)" },
      { name: "container", schema: { type: "string" }, description: "run inside this container" },
      { name: "cols", schema: { type: "integer" }, description: "terminal width" },
      { name: "rows", schema: { type: "integer" }, description: "terminal height" },
    ],
    responses: { 101: { media: "websocket", description: "switching to WebSocket" }, 401: "Error", 403: "Error" },
    websocket: true,
  },
  {
    method: "GET",
    path: `/v1/vms/${vmParam}/containers/{container}/attach/ws`,
    operationId: "attachInteractive",
    summary: "WebSocket: attach to a container's terminal (input, output, resize, exit), with the messages of execInteractive.",
    query: [
      { name: "cols", schema: { type: "integer" }, description: "terminal width" },
      { name: "rows", schema: { type: "integer" }, description: "terminal height" },
    ],
    responses: { 101: { media: "websocket", description: "switching to WebSocket" }, 401: "Error", 403: "Error" },
    websocket: true,
  },
];

/** Each route's path as a pattern and its parameter names, made once. */
const patterns = routes.map((route) => {
  const names: string[] = [];
  const re = new RegExp(`^${route.path.replace(/\{(\w+)\}/g, (_, n: string) => (names.push(n), "([^/]+)"))}$`);
  return { route, re, names };
});

/** The route for a method and path, and its path parameters. */
export function matchRoute(method: string, pathname: string): { route: Route; params: Record<string, string> } | undefined {
  for (const { route, re, names } of patterns) {
    if (route.method !== method && !(method === "HEAD" && route.method === "GET")) continue;
    const m = re.exec(pathname);
    if (!m) continue;
    const params: Record<string, string> = {};
    names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1]!)));
    return { route, params };
  }
  return undefined;
}
