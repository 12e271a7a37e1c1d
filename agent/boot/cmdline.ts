// Settings from the kernel command line, so one initramfs serves every VM
// and every machine: fractal.listen=URL (repeatable, or comma-separated),
// fractal.share=TAG:/path[:virtiofs], fractal.hostname=NAME, fractal.log=PATH,
// fractal.key=[ALLOW:]BASE64 (repeatable; see proto/authorized-keys.ts),
// fractal.auth=network|all|none, fractal.ip=[IFACE:]ADDR/PREFIX[,GATEWAY]
// (a static address instead of DHCP, on IFACE or the first link) and
// fractal.mtu=BYTES (every link's MTU, set before it is configured).
import net from "node:net";
import { parseAuthMode, parseCmdlineKey, type AuthMode, type AuthorizedKey } from "../../proto/authorized-keys.js";

export interface Share {
  tag: string;
  path: string;
  fs: "9p" | "virtiofs";
  readonly: boolean;
}

/** A static address: `fractal.ip=[IFACE:]ADDR/PREFIX[,GATEWAY]`. */
export interface StaticIp {
  /** undefined: the first link by name (eth0 on most machines). */
  iface?: string;
  address: string;
  prefix: number;
  gateway?: string;
}

export interface BootConfig {
  listen: string[];
  shares: Share[];
  hostname: string;
  logFile: string;
  keys: AuthorizedKey[];
  auth?: AuthMode;
  ip?: StaticIp;
  /** Every link's MTU (the host's network takes larger frames than 1500). */
  mtu?: number;
  /** Problems found while parsing: logged, never fatal. */
  errors: string[];
}

/** Splits a command line the way the kernel does: spaces, with double quotes grouping. */
function words(cmdline: string): string[] {
  const out: string[] = [];
  for (const m of cmdline.matchAll(/(?:[^\s"]+|"[^"]*")+/g)) out.push(m[0].replace(/"/g, ""));
  return out;
}

export function parseCmdline(cmdline: string): BootConfig {
  const cfg: BootConfig = { listen: [], shares: [], hostname: "fractal", logFile: "/run/fractal/agent.log", keys: [], errors: [] };
  for (const w of words(cmdline)) {
    const eq = w.indexOf("=");
    if (!w.startsWith("fractal.") || eq < 0) continue;
    const key = w.slice("fractal.".length, eq);
    const value = w.slice(eq + 1);
    switch (key) {
      case "listen":
        cfg.listen.push(...value.split(",").filter((x) => x !== ""));
        break;
      case "share": {
        const [tag, path, ...opts] = value.split(":");
        if (!tag || !path || !path.startsWith("/")) {
          cfg.errors.push(`fractal.share=${value}: expected TAG:/absolute/path[:virtiofs][:ro]`);
          break;
        }
        cfg.shares.push({ tag, path, fs: opts.includes("virtiofs") ? "virtiofs" : "9p", readonly: opts.includes("ro") });
        break;
      }
      case "hostname":
        cfg.hostname = value;
        break;
      case "log":
        cfg.logFile = value;
        break;
      case "key":
      case "auth":
        try {
          if (key === "key") cfg.keys.push(parseCmdlineKey(value));
          else cfg.auth = parseAuthMode(value, "fractal.auth");
        } catch (err) {
          cfg.errors.push((err as Error).message);
        }
        break;
      case "ip": {
        const ip = parseStaticIp(value);
        if (typeof ip === "string") cfg.errors.push(`fractal.ip=${value}: ${ip}; using DHCP`);
        else cfg.ip = ip;
        break;
      }
      case "mtu": {
        // 68: IPv4's minimum; 65535: the largest an IP packet can be.
        const n = Number(value);
        if (/^\d+$/.test(value) && n >= 68 && n <= 65535) cfg.mtu = n;
        else cfg.errors.push(`fractal.mtu=${value}: expected a number of bytes from 68 to 65535; keeping each link's own`);
        break;
      }
      default:
        cfg.errors.push(`unknown setting fractal.${key}`);
    }
  }
  return cfg;
}

/** The address, or what is wrong with it. */
function parseStaticIp(value: string): StaticIp | string {
  const usage = "expected [IFACE:]ADDR/PREFIX[,GATEWAY], e.g. 192.168.1.20/24,192.168.1.1";
  const [addrPart, gateway, extra] = value.split(",");
  const slash = addrPart!.lastIndexOf("/");
  if (slash < 0 || extra !== undefined) return usage;
  let address = addrPart!.slice(0, slash);
  let iface: string | undefined;
  // An IPv6 address has colons of its own: an interface is split off only when the whole is not an address.
  if (net.isIP(address) === 0 && address.includes(":")) {
    iface = address.slice(0, address.indexOf(":"));
    address = address.slice(iface.length + 1);
    if (!/^[a-zA-Z][\w.-]{0,14}$/.test(iface)) return `"${iface}" is not an interface name`;
  }
  const family = net.isIP(address);
  if (family === 0) return `${address} is not an IP address`;
  const prefixText = addrPart!.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) return `bad prefix /${prefixText} for ${address}`;
  if (gateway !== undefined && net.isIP(gateway) !== family) return `gateway ${gateway} is not an IPv${family} address`;
  return { iface, address, prefix, gateway };
}
