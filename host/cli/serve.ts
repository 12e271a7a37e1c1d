// `fractal-host serve`: the REST API and the web console (host/api).
import path from "node:path";
import { loadToken } from "../api/auth.js";
import { startServer } from "../api/server.js";
import { stateRoot } from "../vm/state.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { defaultGuest, defaultKernel } from "./vm.js";

export const serveHelp = `usage: fractal-host serve [--listen HOST:PORT] [--token-file FILE]

Serves fractal's REST API (/v1, described at /v1/openapi.json) and the web
console (/) over HTTP, through the same client library the CLI uses. Every
request needs the bearer token (Authorization: Bearer TOKEN), made on first
start in FILE (mode 600) and printed with the URL; the console signs in by
opening the printed /login URL once (a same-origin session cookie). Requests
from a page of another origin are refused.

      --listen HOST:PORT  where to listen (default 127.0.0.1:8080; port 0 picks one)
      --token-file FILE   the token (default: api-token beside the VMs' state)
  -h, --help              this text
`;

export interface ServeCommand {
  hostname: string;
  port: number;
  tokenFile: string;
}

export function parseServe(args: string[]): ServeCommand | "help" {
  const p = parseFlags(args, [{ long: "listen", value: true }, { long: "token-file", value: true }, { long: "help", short: "h" }], "serve");
  if (flag(p, "help")) return "help";
  if (p.rest.length > 0) throw usageError("serve", `unexpected argument "${p.rest[0]}"`);
  const listen = value(p, "listen") ?? "127.0.0.1:8080";
  const m = /^(.+):(\d+)$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw usageError("serve", `bad --listen "${listen}": expected HOST:PORT`);
  return { hostname: m[1]!.replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]), tokenFile: value(p, "token-file") ?? path.join(path.dirname(stateRoot()), "api-token") };
}

export async function runServe(cmd: ServeCommand, keyFile?: string): Promise<number> {
  const token = loadToken(cmd.tokenFile);
  const server = startServer({ hostname: cmd.hostname, port: cmd.port, token, keyFile, kernel: path.resolve(defaultKernel(false)), ...defaultGuest(false) });
  const host = cmd.hostname.includes(":") ? `[${cmd.hostname}]` : cmd.hostname;
  const base = `http://${host}:${server.port}`;
  if (!["127.0.0.1", "::1", "localhost"].includes(cmd.hostname)) process.stderr.write(`warning: listening on ${cmd.hostname}, not loopback: the token is all that guards it (use TLS in front of it)\n`);
  process.stdout.write(`fractal API at ${base}/v1 (token in ${cmd.tokenFile})\nconsole: ${base}/login?token=${token}\ncurl -H 'Authorization: Bearer ${token}' ${base}/v1/vms\n`);
  await new Promise<void>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => resolve());
  });
  server.stop(true);
  return 0;
}
