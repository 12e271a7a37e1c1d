// Settings from the kernel command line, so one initramfs serves every VM
// and every machine: fractal.listen=URL (repeatable, or comma-separated),
// fractal.share=TAG:/path[:virtiofs], fractal.hostname=NAME, fractal.log=PATH,
// fractal.key=[ALLOW:]BASE64 (repeatable; see proto/authorized-keys.ts) and
// fractal.auth=network|all|none.
import { parseAuthMode, parseCmdlineKey, type AuthMode, type AuthorizedKey } from "../../proto/authorized-keys.js";

export interface Share {
  tag: string;
  path: string;
  fs: "9p" | "virtiofs";
  readonly: boolean;
}

export interface BootConfig {
  listen: string[];
  shares: Share[];
  hostname: string;
  logFile: string;
  keys: AuthorizedKey[];
  auth?: AuthMode;
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
      default:
        cfg.errors.push(`unknown setting fractal.${key}`);
    }
  }
  return cfg;
}
