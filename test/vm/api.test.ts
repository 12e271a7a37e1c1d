// The REST API against a real `fractal-host serve` and a TCG guest it boots
// itself: every route of the OpenAPI document exercised, every JSON answer
// validated against the document's schema (by ajv, not our own checker),
// the token, the session cookie and the Origin checks, the WebSockets with a
// terminal, and the CLI's --json printing the same shapes.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Ajv, { type ValidateFunction } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { HOST_BIN, ROOT, runCli } from "../helpers/agent.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-api-test-"));
const env = { FRACTAL_STATE: path.join(state, "vms") };
const VM = "apitest";
/** Debian's chromium (installed by make test-deps / .ci/run). */
const CHROMIUM = "/usr/bin/chromium";
let server: ChildProcess;
let base = "";
let token = "";
let doc: { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }> }>>; components: { schemas: Record<string, unknown> } };
const seen = new Set<string>();
const ajv = new Ajv({ strict: false, allErrors: true });
const validators = new Map<string, ValidateFunction>();

/** OpenAPI 3.0's `nullable` in JSON Schema terms. */
function jsonSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(jsonSchema);
  if (typeof s !== "object" || s === null) return s;
  const o = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, jsonSchema(v)])) as Record<string, unknown>;
  if (o.nullable === true) {
    delete o.nullable;
    return { anyOf: [o, { type: "null" }] };
  }
  return o;
}

/** Calls the API and checks the answer against the document: status declared for the route, JSON body valid. */
async function call(method: string, route: string, urlPath: string, o: { body?: unknown; headers?: Record<string, string>; auth?: boolean } = {}): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const headers: Record<string, string> = { ...(o.auth === false ? {} : { authorization: `Bearer ${token}` }), ...(o.body !== undefined ? { "content-type": "application/json" } : {}), ...o.headers };
  const r = await fetch(`${base}${urlPath}`, { method, headers, body: o.body === undefined ? undefined : typeof o.body === "string" ? o.body : JSON.stringify(o.body) });
  const text = await r.text();
  const op = doc?.paths[route]?.[method.toLowerCase()];
  if (doc) {
    expect(op, `${method} ${route} is in the OpenAPI document`).toBeDefined();
    const declared = op!.responses[String(r.status)];
    expect(declared, `${method} ${route} answered ${r.status}, which the document does not declare: ${text}`).toBeDefined();
    const ref = declared!.content?.["application/json"]?.schema.$ref;
    if (ref) {
      let v = validators.get(ref);
      if (!v) validators.set(ref, (v = ajv.compile({ $ref: `components${ref}` })));
      const body = JSON.parse(text);
      expect(v(body), `${method} ${route} ${r.status}: ${ajv.errorsText(v.errors)}\n${text}`).toBe(true);
    }
    seen.add(`${method} ${route}`);
  }
  return { status: r.status, json: text && r.headers.get("content-type")?.includes("json") ? JSON.parse(text) : undefined, text, headers: r.headers };
}

function ws(urlPath: string, headers: Record<string, string> = { authorization: `Bearer ${token}` }): Promise<{ sock: WebSocket; out: () => string; exit: Promise<any> }> {
  return new Promise((resolve, reject) => {
    const sock = new WebSocket(`${base.replace(/^http/, "ws")}${urlPath}`, { headers });
    let text = "";
    let done!: (m: unknown) => void;
    const exit = new Promise((r) => (done = r));
    sock.on("message", (data, binary) => {
      if (binary) text += data.toString();
      else {
        const m = JSON.parse(data.toString());
        if (m.type === "exit" || m.type === "error") done(m);
      }
    });
    sock.on("open", () => resolve({ sock, out: () => text, exit }));
    sock.on("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    sock.on("error", reject);
  });
}

async function until(what: string, f: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  ajv.addSchema({ $id: "components", components: { schemas: jsonSchema({}) } });
  server = spawn(HOST_BIN, ["serve", "--listen", "127.0.0.1:0", "--token-file", path.join(state, "token")], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  let printed = "";
  server.stdout!.on("data", (b: Buffer) => (printed += b.toString()));
  await until("serve to print its URL", () => /console: (\S+)\/login\?token=(\S+)/.test(printed));
  const m = /console: (\S+)\/login\?token=(\S+)/.exec(printed)!;
  [base, token] = [m[1]!, m[2]!];
  expect(fs.statSync(path.join(state, "token")).mode & 0o777).toBe(0o600);
  const d = await fetch(`${base}/v1/openapi.json`, { headers: { authorization: `Bearer ${token}` } });
  doc = (await d.json()) as typeof doc;
  ajv.removeSchema("components");
  ajv.addSchema({ $id: "components", components: { schemas: jsonSchema(doc.components.schemas) } });
}, 60_000);

afterAll(async () => {
  server?.kill("SIGTERM");
  await runCli(["vm", "stop", VM], { env });
  fs.rmSync(state, { recursive: true, force: true });
}, 120_000);

describe("REST API", () => {
  it("needs the token, refuses a wrong one and a foreign Origin, and lets the console in by cookie", async () => {
    const none = await call("GET", "/v1/vms", "/v1/vms", { auth: false });
    expect(none.status).toBe(401);
    expect(none.json.error.code).toBe("UNAUTHENTICATED");
    const wrong = await call("GET", "/v1/vms", "/v1/vms", { auth: false, headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(401);
    const foreign = await call("POST", "/v1/vms", "/v1/vms", { body: { name: "x" }, headers: { origin: "http://evil.example" } });
    expect(foreign.status).toBe(403);
    expect(foreign.json.error.code).toBe("PERMISSION_DENIED");
    await expect(ws("/v1/vms/x/exec/ws", { authorization: `Bearer ${token}`, origin: "http://evil.example" })).rejects.toThrow(/403/);
    // The console: /login with the token sets a same-site session cookie.
    const login = await fetch(`${base}/login?token=${token}`, { redirect: "manual" });
    expect(login.status).toBe(303);
    const cookie = login.headers.get("set-cookie")!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const session = cookie.split(";")[0]!;
    expect((await call("GET", "/v1/vms", "/v1/vms", { auth: false, headers: { cookie: session } })).status).toBe(200);
    // A cookie alone does not open a WebSocket: the page's Origin must come with it.
    await expect(ws("/v1/vms/x/exec/ws", { cookie: session })).rejects.toThrow(/403/);
    expect((await fetch(`${base}/login?token=wrong`)).status).toBe(401);
    const page = await fetch(`${base}/`);
    expect(await page.text()).toContain("<title>fractal console</title>");
  });

  it("boots a VM, runs, inspects, logs, execs, stops and removes containers, with HTTP's status codes", async () => {
    const bad = await call("POST", "/v1/vms", "/v1/vms", { body: { name: "bad name!" } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/body\.name/);
    const boot = await call("POST", "/v1/vms", "/v1/vms", { body: { name: VM, images: path.join(ROOT, "build/images"), memMiB: 1024 } });
    expect(boot.status, boot.text).toBe(201);
    expect(boot.json.name).toBe(VM);
    expect((await call("GET", "/v1/vms", "/v1/vms")).json.vms.map((v: { name: string }) => v.name)).toContain(VM);
    const images = await call("GET", "/v1/vms/{vm}/images", `/v1/vms/${VM}/images`);
    expect(images.json.images.map((i: { reference: string }) => i.reference)).toContain("busybox:latest");
    expect((await call("GET", "/v1/vms/{vm}/images", "/v1/vms/nosuch/images")).status).toBe(404);

    const run = await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "web", command: ["sh", "-c", "echo started; echo oops >&2; exec sleep 600"] } });
    expect(run.status, run.text).toBe(201);
    expect(run.json.name).toBe("web");
    const again = await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "web", command: ["true"] } });
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe("ALREADY_EXISTS");
    expect((await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { command: ["true"] } })).status).toBe(400);
    expect((await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: "{not json" })).status).toBe(400);
    expect((await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "nosuch:v1" } })).status).toBe(404);

    const list = await call("GET", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`);
    expect(list.json.containers.map((c: { name: string }) => c.name)).toEqual(["web"]);
    const inspect = await call("GET", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/web`);
    expect(inspect.json.container.state).toBe("running");
    expect(inspect.json.layers[0].how).toBe("image");
    expect((await call("GET", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/nosuch`)).json.error.code).toBe("CONTAINER_NOT_FOUND");

    await until("the container's output", async () => (await call("GET", "/v1/vms/{vm}/containers/{container}/logs", `/v1/vms/${VM}/containers/web/logs`)).text.includes("oops"));
    const logs = await call("GET", "/v1/vms/{vm}/containers/{container}/logs", `/v1/vms/${VM}/containers/web/logs`);
    expect(logs.text).toBe("started\noops\n");

    const exec = await call("POST", "/v1/vms/{vm}/exec", `/v1/vms/${VM}/exec`, { body: { argv: ["sh", "-c", "echo $((6*7)); echo to-err >&2; exit 3"] } });
    expect(exec.json).toEqual({ exitCode: 3, signal: null, stdout: "42\n", stderr: "to-err\n" });
    const inCtr = await call("POST", "/v1/vms/{vm}/exec", `/v1/vms/${VM}/exec`, { body: { argv: ["cat"], container: "web", stdin: "fed through stdin" } });
    expect(inCtr.json.stdout).toBe("fed through stdin");
    const missing = await call("POST", "/v1/vms/{vm}/exec", `/v1/vms/${VM}/exec`, { body: { argv: ["/nonexistent"] } });
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe("COMMAND_NOT_FOUND");
    expect((await call("POST", "/v1/vms/{vm}/exec", `/v1/vms/${VM}/exec`, { body: { argv: [] } })).status).toBe(400);

    // Followed logs as server-sent events, ending with the exit once the container is killed.
    const sse = fetch(`${base}/v1/vms/${VM}/containers/web/logs?follow=true`, { headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } }).then((r) => r.text());
    await new Promise((r) => setTimeout(r, 500));
    const kill = await call("POST", "/v1/vms/{vm}/containers/{container}/kill", `/v1/vms/${VM}/containers/web/kill`, { body: { signal: 9 } });
    expect(kill.status).toBe(204);
    const events = await sse;
    expect(events).toContain('event: stdout\ndata: "started\\n"');
    expect(events).toContain('event: stderr\ndata: "oops\\n"');
    expect(events).toMatch(/event: exit\ndata: \{"exitCode":137,"signal":(9|null),"oomKilled":false\}/);
    expect((await call("POST", "/v1/vms/{vm}/containers/{container}/wait", `/v1/vms/${VM}/containers/web/wait`)).json.exitCode).toBe(137);
    expect((await call("POST", "/v1/vms/{vm}/containers/{container}/kill", `/v1/vms/${VM}/containers/web/kill`, { body: {} })).status).toBe(409);

    await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "sleeper", command: ["sleep", "600"] } });
    const stop = await call("POST", "/v1/vms/{vm}/containers/{container}/stop", `/v1/vms/${VM}/containers/sleeper/stop?timeout=1`);
    expect(stop.json.exitCode).toBe(137);
    const del = await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/sleeper`);
    expect(del.status).toBe(204);
    expect((await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/web`)).status).toBe(204);
    expect((await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/web`)).status).toBe(404);
    const nowhere = await fetch(`${base}/v1/nowhere`, { headers: { authorization: `Bearer ${token}` } });
    expect(nowhere.status).toBe(404);
    expect(((await nowhere.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
  }, 300_000);

  it("runs an interactive terminal over a WebSocket, exec'd into a container and attached to one", async () => {
    await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "box", command: ["sleep", "600"] } });
    const t = await ws(`/v1/vms/${VM}/exec/ws?container=box&cmd=sh&cols=80&rows=24`);
    t.sock.send(Buffer.from("echo $((6*7))\n"));
    await until("42 on the terminal", () => /\r\n42\r\n/.test(t.out()));
    t.sock.send(JSON.stringify({ type: "resize", cols: 101, rows: 33 }));
    await new Promise((r) => setTimeout(r, 300));
    t.sock.send(Buffer.from("stty size; exit 5\n"));
    expect(await t.exit).toMatchObject({ type: "exit", exitCode: 5 });
    expect(t.out()).toContain("33 101");
    seen.add("GET /v1/vms/{vm}/exec/ws");
    await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/box?force=true`);

    const run = await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "tty", command: ["sh"], tty: true } });
    expect(run.status, run.text).toBe(201);
    const a = await ws(`/v1/vms/${VM}/containers/tty/attach/ws?cols=90&rows=20`);
    a.sock.send(Buffer.from("stty size; echo in-$((40+2)); exit 7\n"));
    expect(await a.exit).toMatchObject({ type: "exit", exitCode: 7 });
    expect(a.out()).toContain("20 90");
    expect(a.out()).toContain("in-42");
    seen.add("GET /v1/vms/{vm}/containers/{container}/attach/ws");
    await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/tty`);
  }, 120_000);

  it("has the CLI print the API's shapes with --json", async () => {
    await call("POST", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`, { body: { image: "busybox", name: "shape", command: ["sleep", "600"] } });
    const check = (ref: string, text: string) => {
      const v = ajv.compile({ $ref: `components#/components/schemas/${ref}` });
      const body = JSON.parse(text);
      expect(v(body), `${ref}: ${ajv.errorsText(v.errors)}`).toBe(true);
      return body;
    };
    const cli = (...args: string[]) => runCli(args, { env });
    expect(check("VmList", (await cli("ls", "--json")).stdout.toString()).vms[0].name).toBe(VM);
    expect(check("ContainerList", (await cli("ps", "--vm", VM, "--json")).stdout.toString()).containers[0].name).toBe("shape");
    expect(check("ImageList", (await cli("images", "--vm", VM, "--json")).stdout.toString()).images.length).toBeGreaterThan(0);
    expect(check("LayerList", (await cli("layer", "ls", "--vm", VM, "--json", "shape")).stdout.toString()).layers[0].how).toBe("image");
    const inspected = JSON.parse((await cli("inspect", "--vm", VM, "shape")).stdout.toString());
    expect(check("ContainerDetail", JSON.stringify(inspected[0])).container.name).toBe("shape");
    const api = await call("GET", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/shape`);
    // The same container, the same shape; times are put on this host's clock per call, so they may differ by the skew's jitter.
    const untimed = (d: { container: Record<string, unknown> }) => ({ ...d, container: { ...d.container, createdMs: 0, finishedMs: 0 } });
    expect(untimed(inspected[0])).toEqual(untimed(api.json));
    expect(Math.abs(inspected[0].container.createdMs - api.json.container.createdMs)).toBeLessThan(1000);
    await call("DELETE", "/v1/vms/{vm}/containers/{container}", `/v1/vms/${VM}/containers/shape?force=true`);
  }, 120_000);

  it("drives the web console in a real browser: lists the VM, runs a container, types into its terminal, resizes, follows logs, stops it", async () => {
    const shots = path.join(ROOT, "build/console-screenshots");
    fs.mkdirSync(shots, { recursive: true });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
      await page.goto(`${base}/login?token=${token}`);
      await page.getByRole("button", { name: `VM ${VM}` }).waitFor();
      await page.locator("#run-image option", { hasText: "busybox:latest" }).waitFor({ state: "attached" });
      await page.screenshot({ path: path.join(shots, "1-vms.png") });
      await page.selectOption("#run-image", "busybox:latest");
      await page.fill("#run-cmd", "sh");
      await page.fill("#run-name", "webterm");
      await page.getByRole("button", { name: "Run", exact: true }).click();
      const row = page.locator("#containers tr[data-name=webterm]");
      await row.getByText("running").waitFor();
      await page.getByRole("button", { name: "Terminal in webterm" }).click();
      const screen = page.locator("#term .xterm-rows");
      await page.locator("#term .xterm-helper-textarea").waitFor({ state: "attached" });
      await page.keyboard.type("echo $((6*7))\n");
      await expect.poll(() => screen.innerText(), { timeout: 20_000 }).toMatch(/^42$/m);
      await page.keyboard.type("stty size\n");
      await expect.poll(() => screen.innerText(), { timeout: 20_000 }).toMatch(/^\d+ \d+$/m);
      const before = /^(\d+ \d+)$/m.exec(await screen.innerText())![1];
      await page.screenshot({ path: path.join(shots, "2-terminal.png") });
      // A phone-width window: the terminal refits, and the shell is told.
      await page.setViewportSize({ width: 390, height: 800 });
      await page.waitForTimeout(500);
      // Nothing wider than the phone: no sideways scrolling.
      expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
      await page.keyboard.type("clear; stty size\n");
      await expect.poll(async () => /^(\d+ \d+)$/m.exec(await screen.innerText())?.[1], { timeout: 20_000 }).not.toBe(before);
      await page.screenshot({ path: path.join(shots, "3-phone.png"), fullPage: true });
      await page.setViewportSize({ width: 1100, height: 800 });
      await page.getByRole("button", { name: "Logs of webterm" }).click();
      await expect.poll(() => page.locator("#logs").innerText(), { timeout: 20_000 }).toContain("42");
      await page.screenshot({ path: path.join(shots, "4-logs.png") });
      await page.getByRole("button", { name: "Stop webterm" }).click();
      await row.getByText("exited").waitFor({ timeout: 30_000 });
      await page.screenshot({ path: path.join(shots, "5-stopped.png") });
    } finally {
      await browser.close();
    }
  }, 180_000);

  it("powers the VM off, and every route of the document was exercised", async () => {
    const stop = await call("POST", "/v1/vms/{vm}/stop", `/v1/vms/${VM}/stop`);
    expect(stop.json).toEqual({ name: VM, how: "shutdown" });
    expect((await call("GET", "/v1/vms/{vm}/containers", `/v1/vms/${VM}/containers`)).status).toBe(404);
    await call("GET", "/v1/openapi.json", "/v1/openapi.json");
    const all = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    expect(all.filter((r) => !seen.has(r))).toEqual([]);
  }, 120_000);
});
