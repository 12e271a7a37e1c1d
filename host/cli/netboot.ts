// `fractal-host netboot-serve`: boots machines over the network (host/netboot).
import fs from "node:fs";
import path from "node:path";
import { parseEndpoint } from "../../proto/endpoint.js";
import { chainScript, ipxeScript, NETBOOT_INITRD, NETBOOT_KERNEL, NETBOOT_SCRIPT, type NetbootSettings } from "../netboot/script.js";
import { startNetbootServer } from "../netboot/server.js";
import { flag, parseFlags, usageError, value, values } from "./args.js";
import { guestKeyArgs } from "./keys.js";
import { defaultArtifact } from "./vm.js";

export const netbootHelp = `usage: fractal-host netboot-serve [OPTIONS]

Serves the build's kernel and initramfs over HTTP to machines that boot
from the network with iPXE, and the iPXE script that boots them with the
kernel command line below: which transports the agent listens on and which
keys it lets in (your key, as boot does, and --authorize's).

  --listen HOST:PORT     where to serve HTTP (default 0.0.0.0:8080)
  --agent-listen URL     the agent's listener (repeatable; default
                         tcp://0.0.0.0:1024), e.g. serial:///dev/ttyS1?baud=115200
  --authorize FILE       also let these keys in (authorized_keys lines)
  --console DEV          the machines' console (default ttyS0,115200)
  --append ARGS          more kernel command line (fractal.ip=..., ...)
  --kernel K             bzImage to serve (default: build/kernel/vmlinuz)
  --initrd I             initramfs to serve (default: build/initramfs.cpio)
  --tftp-dir DIR         also write DIR/${NETBOOT_SCRIPT} for a TFTP server: a chain to
                         this server at DHCP's next-server (or --chain-url)
  --chain-url URL        the base URL machines reach this server at
                         (default http://\${next-server}:PORT)
  --write DIR            write ${NETBOOT_SCRIPT}, ${NETBOOT_KERNEL} and ${NETBOOT_INITRD} into DIR for any
                         HTTP server, and exit
  -h, --help             this text

A machine's DHCP answer names the script (or the TFTP chain to it); see
docs/hardware.md.
`;

export interface NetbootCommand {
  hostname: string;
  port: number;
  listen: string[];
  authorize: string[];
  console?: string;
  append: string[];
  kernel: string;
  initrd: string;
  tftpDir?: string;
  chainUrl?: string;
  write?: string;
}

export function parseNetboot(args: string[]): NetbootCommand | "help" {
  const p = parseFlags(
    args,
    [
      { long: "listen", value: true },
      { long: "agent-listen", value: true, repeat: true },
      { long: "authorize", value: true, repeat: true },
      { long: "console", value: true },
      { long: "append", value: true, repeat: true },
      { long: "kernel", value: true },
      { long: "initrd", value: true },
      { long: "tftp-dir", value: true },
      { long: "chain-url", value: true },
      { long: "write", value: true },
      { long: "help", short: "h" },
    ],
    "netboot-serve",
  );
  if (flag(p, "help")) return "help";
  if (p.rest.length > 0) throw usageError("netboot-serve", `unexpected argument "${p.rest[0]}"`);
  const listen = value(p, "listen") ?? "0.0.0.0:8080";
  const m = /^(.+):(\d+)$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw usageError("netboot-serve", `bad --listen "${listen}": expected HOST:PORT`);
  const agentListen = values(p, "agent-listen");
  for (const url of agentListen) {
    try {
      parseEndpoint(url);
    } catch (err) {
      throw usageError("netboot-serve", `bad --agent-listen: ${(err as Error).message}`);
    }
    if (url.includes(",") || /\s/.test(url)) throw usageError("netboot-serve", `bad --agent-listen "${url}": no commas or spaces`);
  }
  const chainUrl = value(p, "chain-url");
  if (chainUrl !== undefined && !/^https?:\/\/[^/\s]+$/.test(chainUrl)) throw usageError("netboot-serve", `bad --chain-url "${chainUrl}": expected http://HOST:PORT`);
  return {
    hostname: m[1]!.replace(/^\[(.*)\]$/, "$1"),
    port: Number(m[2]),
    listen: agentListen,
    authorize: values(p, "authorize"),
    console: value(p, "console"),
    append: values(p, "append").flatMap((a) => a.split(/\s+/).filter((x) => x !== "")),
    kernel: path.resolve(value(p, "kernel") ?? defaultArtifact("kernel/vmlinuz", "FRACTAL_KERNEL")),
    initrd: path.resolve(value(p, "initrd") ?? defaultArtifact("initramfs.cpio", "FRACTAL_INITRD")),
    tftpDir: value(p, "tftp-dir"),
    chainUrl,
    write: value(p, "write"),
  };
}

export async function runNetboot(cmd: NetbootCommand, keyFile?: string): Promise<number> {
  const settings: NetbootSettings = { listen: cmd.listen, keys: await guestKeyArgs(cmd.authorize, keyFile), console: cmd.console, append: cmd.append };
  const script = ipxeScript(settings);
  if (cmd.write) {
    writeTree(cmd.write, script, cmd.kernel, cmd.initrd);
    process.stdout.write(`wrote ${path.join(cmd.write, NETBOOT_SCRIPT)} with ${NETBOOT_KERNEL} and ${NETBOOT_INITRD}: serve the directory over HTTP\n`);
    return 0;
  }
  const server = startNetbootServer({
    hostname: cmd.hostname,
    port: cmd.port,
    script,
    kernel: cmd.kernel,
    initrd: cmd.initrd,
    log: (line) => process.stderr.write(`netboot-serve: ${line}\n`),
  });
  if (cmd.tftpDir) {
    fs.mkdirSync(cmd.tftpDir, { recursive: true });
    fs.writeFileSync(path.join(cmd.tftpDir, NETBOOT_SCRIPT), chainScript(server.port, cmd.chainUrl));
  }
  const host = cmd.hostname.includes(":") ? `[${cmd.hostname}]` : cmd.hostname;
  process.stdout.write(
    `serving http://${host}:${server.port}/${NETBOOT_SCRIPT} (${NETBOOT_KERNEL}: ${cmd.kernel}, ${NETBOOT_INITRD}: ${cmd.initrd})\n` +
      (cmd.tftpDir ? `TFTP boot file: ${path.join(cmd.tftpDir, NETBOOT_SCRIPT)} (chains to this server)\n` : ""),
  );
  await new Promise<void>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => resolve());
  });
  server.stop();
  return 0;
}

/** The script beside hard links to (or, across filesystems, copies of) the kernel and initramfs. */
function writeTree(dir: string, script: string, kernel: string, initrd: string): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, src] of [[NETBOOT_KERNEL, kernel], [NETBOOT_INITRD, initrd]] as const) {
    if (!fs.existsSync(src)) throw usageError("netboot-serve", `${src} does not exist (run make build)`);
    const dst = path.join(dir, name);
    fs.rmSync(dst, { force: true });
    try {
      fs.linkSync(src, dst);
    } catch {
      fs.copyFileSync(src, dst);
    }
  }
  fs.writeFileSync(path.join(dir, NETBOOT_SCRIPT), script);
}
