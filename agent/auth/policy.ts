// Per-key allowlists of request types (their format: proto/authorized-keys.ts;
// a request's name: policyName in ../commands.ts).
// A refused request is answered with PERMISSION_DENIED before its handler
// runs, so it changes nothing.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Principal } from "../../proto/session.js";

/** Throws PERMISSION_DENIED unless the principal may send this request type. */
export function checkAllowed(p: Principal | undefined, type: string): void {
  if (!p || p.allowed.includes("all") || p.allowed.includes(type)) return;
  // Reading output is part of attaching: a key that may attach may read logs.
  if (type === "logs" && p.allowed.includes("attach")) return;
  throw new FractalError(ErrorCode.PERMISSION_DENIED, `permission denied: key "${p.name}" may not send ${type} requests (allowed: ${p.allowed.join(", ")})`);
}
