// The web console: plain DOM and the REST API (the page's session cookie
// authenticates it), xterm.js for terminals over the API's WebSockets.
// Bundled into fractal-host at build time (scripts/console-bundle.ts).
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";

interface Vm {
  name: string;
  state: string;
}
interface Container {
  id: string;
  name: string;
  image: string;
  state: string;
  tty: boolean;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
let current = "";
let term: Terminal | undefined;
let socket: WebSocket | undefined;
let logSource: EventSource | undefined;
const fit = new FitAddon();

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(path, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  if (r.status === 401) {
    $("login").hidden = false;
    throw new Error("not signed in");
  }
  if (!r.ok) {
    const e = (await r.json().catch(() => ({}))) as { error?: { message?: string } };
    throw new Error(e.error?.message ?? `${method} ${path}: ${r.status}`);
  }
  return r.status === 204 ? (undefined as T) : ((await r.json()) as T);
}

function status(text: string): void {
  $("status").textContent = text;
}

function button(label: string, onClick: () => void, name = label): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-label", name);
  b.addEventListener("click", onClick);
  return b;
}

async function showVms(): Promise<void> {
  const { vms } = await api<{ vms: Vm[] }>("GET", "/v1/vms");
  const ul = $("vms");
  ul.replaceChildren(
    ...vms.map((v) => {
      const li = document.createElement("li");
      const b = button(`${v.name} (${v.state})`, () => void selectVm(v.name), `VM ${v.name}`);
      if (v.name === current) b.setAttribute("aria-current", "true");
      li.append(b);
      return li;
    }),
  );
  if (!current && vms.length > 0) await selectVm(vms[0]!.name);
}

async function selectVm(name: string): Promise<void> {
  current = name;
  $("vm").hidden = false;
  $("vm-name").textContent = `VM ${name}`;
  const { images } = await api<{ images: { reference: string; digest: string }[] }>("GET", `/v1/vms/${name}/images`).catch(() => ({ images: [] }));
  $<HTMLSelectElement>("run-image").replaceChildren(
    ...images.map((i) => {
      const o = document.createElement("option");
      o.value = o.textContent = i.reference || i.digest;
      return o;
    }),
  );
  await showContainers();
  await showVms();
}

async function showContainers(): Promise<void> {
  if (!current) return;
  const { containers } = await api<{ containers: Container[] }>("GET", `/v1/vms/${current}/containers?all=true`);
  const rows = containers.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.name = c.name;
    for (const t of [c.name, c.image, c.state]) {
      const td = document.createElement("td");
      td.textContent = t;
      tr.append(td);
    }
    const actions = document.createElement("td");
    const base = `/v1/vms/${current}/containers/${encodeURIComponent(c.name)}`;
    if (c.state === "running") {
      actions.append(
        button("Terminal", () => openTerminal(c.tty ? `${base}/attach/ws` : `/v1/vms/${current}/exec/ws?container=${encodeURIComponent(c.name)}&cmd=sh`, `${c.name}`), `Terminal in ${c.name}`),
        button("Stop", () => void api("POST", `${base}/stop?timeout=2`).then(showContainers, report), `Stop ${c.name}`),
      );
    } else {
      actions.append(button("Remove", () => void api("DELETE", base).then(showContainers, report), `Remove ${c.name}`));
    }
    actions.prepend(button("Logs", () => followLogs(base, c.name), `Logs of ${c.name}`));
    tr.append(actions);
    return tr;
  });
  $("containers").querySelector("tbody")!.replaceChildren(...rows);
}

function report(err: unknown): void {
  status(err instanceof Error ? err.message : String(err));
}

function openTerminal(path: string, title: string): void {
  socket?.close();
  term?.dispose();
  $("term-panel").hidden = false;
  $("term-title").textContent = `Terminal: ${title}`;
  term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14 });
  term.loadAddon(fit);
  term.open($("term"));
  fit.fit();
  const sep = path.includes("?") ? "&" : "?";
  const ws = new WebSocket(`${location.origin.replace(/^http/, "ws")}${path}${sep}cols=${term.cols}&rows=${term.rows}`);
  ws.binaryType = "arraybuffer";
  socket = ws;
  const t = term;
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const m = JSON.parse(e.data) as { type: string; exitCode?: number; error?: { message: string } };
      if (m.type === "exit") t.write(`\r\n[exited with status ${m.exitCode}]\r\n`);
      if (m.type === "error") t.write(`\r\n[${m.error?.message}]\r\n`);
      void showContainers();
      return;
    }
    t.write(new Uint8Array(e.data as ArrayBuffer));
  };
  t.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(new TextEncoder().encode(d)));
  t.onResize(({ cols, rows }) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: "resize", cols, rows })));
  t.focus();
}

function followLogs(base: string, name: string): void {
  logSource?.close();
  $("logs-panel").hidden = false;
  $("logs-title").textContent = `Logs: ${name}`;
  const pre = $("logs");
  pre.textContent = "";
  const es = new EventSource(`${base}/logs?follow=true`);
  logSource = es;
  const add = (e: MessageEvent<string>) => {
    pre.textContent += JSON.parse(e.data) as string;
    pre.scrollTop = pre.scrollHeight;
  };
  es.addEventListener("stdout", add);
  es.addEventListener("stderr", add);
  es.addEventListener("exit", () => {
    es.close();
    void showContainers();
  });
  es.onerror = () => es.close();
}

$<HTMLFormElement>("run").addEventListener("submit", (e) => {
  e.preventDefault();
  const image = $<HTMLSelectElement>("run-image").value;
  const cmd = $<HTMLInputElement>("run-cmd").value.trim();
  const name = $<HTMLInputElement>("run-name").value.trim();
  status(`starting ${image}…`);
  void api<{ name: string }>("POST", `/v1/vms/${current}/containers`, { image, ...(cmd ? { command: cmd.split(/\s+/) } : {}), ...(name ? { name } : {}), tty: true, interactive: true })
    .then(async (r) => {
      status(`started ${r.name}`);
      await showContainers();
    }, report);
});
$("vm-shell").addEventListener("click", () => openTerminal(`/v1/vms/${current}/exec/ws?cmd=sh`, `VM ${current}`));
window.addEventListener("resize", () => term && fit.fit());

void showVms().catch(report);
setInterval(() => void showContainers().catch(() => {}), 5000);
