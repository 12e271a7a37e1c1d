// Per-key allowlists of request types. A refused request is answered with
// PERMISSION_DENIED before its handler runs, so it changes nothing.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Principal } from "../../proto/session.js";
import type { Request } from "../../proto/wire.js";

/** Every request type, named as in fractal.proto, plus "logs": attach without stdin. */
export const REQUEST_TYPES = [
  "ping", "version", "exec", "signal", "resize", "close_stdin", "wait", "shutdown", "images", "run",
  "container_wait", "attach", "logs", "container_kill", "container_stop", "container_remove",
  "container_list", "container_resize", "image_unpack",
] as const;

const GROUPS: Record<string, readonly string[]> = {
  all: ["all"],
  // May look, never touch: list images and containers, read their output.
  observer: ["ping", "version", "images", "container_list", "container_wait", "logs"],
};

export function parseAllowList(text: string, where: string): string[] {
  const out = new Set<string>();
  for (const t of text.split(",")) {
    if (GROUPS[t]) GROUPS[t].forEach((x) => out.add(x));
    else if ((REQUEST_TYPES as readonly string[]).includes(t)) out.add(t);
    else throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: unknown request type "${t}" in allow= (known: ${Object.keys(GROUPS).join(", ")}, ${REQUEST_TYPES.join(", ")})`);
  }
  return [...out];
}

/** The policy name of a request: its oneof field in snake case, attach without stdin as "logs". */
export function requestType(req: Request, kind: string): string {
  if (kind === "attach" && !req.attach?.stdinStream) return "logs";
  return kind.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** Throws PERMISSION_DENIED unless the principal may send this request type. */
export function checkAllowed(p: Principal | undefined, type: string): void {
  if (!p || p.allowed.includes("all") || p.allowed.includes(type)) return;
  // Reading output is part of attaching: a key that may attach may read logs.
  if (type === "logs" && p.allowed.includes("attach")) return;
  throw new FractalError(ErrorCode.PERMISSION_DENIED, `permission denied: key "${p.name}" may not send ${type} requests (allowed: ${p.allowed.join(", ")})`);
}
