// The HTTP side of network boot: the script, the kernel and the initramfs,
// nothing else. Files are streamed from disk per request (a rack booting at
// once must not hold N copies of a 140 MB initramfs in memory).
import fs from "node:fs";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { NETBOOT_INITRD, NETBOOT_KERNEL, NETBOOT_SCRIPT } from "./script.js";

export interface NetbootServerOptions {
  hostname: string;
  port: number;
  script: string;
  kernel: string;
  initrd: string;
  /** One line per request: who asked for what and what they got. */
  log: (line: string) => void;
}

export interface NetbootServer {
  port: number;
  stop(): void;
}

export function startNetbootServer(o: NetbootServerOptions): NetbootServer {
  for (const [what, file] of [["kernel", o.kernel], ["initramfs", o.initrd]] as const) {
    if (!fs.existsSync(file)) throw new FractalError(ErrorCode.NOT_FOUND, `netboot-serve: the ${what} ${file} does not exist (run make build, or pass --${what === "kernel" ? "kernel" : "initrd"})`);
  }
  const files: Record<string, string> = { [`/${NETBOOT_KERNEL}`]: o.kernel, [`/${NETBOOT_INITRD}`]: o.initrd };
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: o.hostname,
      port: o.port,
      fetch(req, srv) {
        const url = new URL(req.url);
        const who = srv.requestIP(req)?.address ?? "?";
        const answer = (res: Response, size: number | string) => {
          o.log(`${who} ${req.method} ${url.pathname} ${res.status} ${size}`);
          return res;
        };
        if (req.method !== "GET" && req.method !== "HEAD") return answer(new Response("only GET\n", { status: 405 }), "-");
        if (url.pathname === `/${NETBOOT_SCRIPT}`) return answer(new Response(o.script, { headers: { "content-type": "text/plain" } }), `${o.script.length} bytes`);
        const file = files[url.pathname];
        if (!file) return answer(new Response(`not found: this server has /${NETBOOT_SCRIPT}, /${NETBOOT_KERNEL} and /${NETBOOT_INITRD}\n`, { status: 404 }), "-");
        const f = Bun.file(file);
        return answer(new Response(f, { headers: { "content-type": "application/octet-stream" } }), `${f.size} bytes`);
      },
    });
  } catch (err) {
    throw new FractalError(ErrorCode.UNAVAILABLE, `netboot-serve: cannot listen on ${o.hostname}:${o.port}: ${(err as Error).message}`);
  }
  return { port: server.port ?? o.port, stop: () => server.stop(true) };
}
