// Content digests as OCI writes them ("sha256:<64 hex>"). Only sha256 is
// accepted: it is what every image tool produces, and a digest we cannot
// verify must not be trusted.
import { createHash } from "node:crypto";
import { ImageError } from "./errors.js";

const SHA256 = /^sha256:[0-9a-f]{64}$/;

export function checkDigest(d: unknown, what: string): string {
  if (typeof d !== "string" || !SHA256.test(d)) throw new ImageError("invalid", `${what}: "${String(d)}" is not a sha256 digest`);
  return d;
}

export const hex = (digest: string) => digest.slice("sha256:".length);

export function digestOf(data: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** OCI's ChainID: the identity of a layer together with everything beneath it. */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : digestOf(`${out[out.length - 1]} ${d}`));
  return out;
}
