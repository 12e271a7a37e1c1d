// Per-key allowlists of request types (their format: proto/authorized-keys.ts).
// A refused request is answered with PERMISSION_DENIED before its handler
// runs, so it changes nothing.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Principal } from "../../proto/session.js";
import type { Request } from "../../proto/wire.js";

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
