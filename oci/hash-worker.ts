// sha256 off the main thread: layer unpacking hashes every byte twice (the
// blob and its uncompressed content), which under emulation costs as much as
// decompressing; on worker threads it overlaps with parsing and writing.
// Messages in: a chunk, or null at the end; out: { acked } per chunk, then
// { digest }.
import { createHash } from "node:crypto";

declare const self: { onmessage: (e: MessageEvent) => void; postMessage(m: unknown): void };

const hash = createHash("sha256");

self.onmessage = (e: MessageEvent) => {
  const chunk = e.data as Uint8Array | null;
  if (chunk === null) {
    self.postMessage({ digest: `sha256:${hash.digest("hex")}` });
    return;
  }
  hash.update(chunk);
  self.postMessage({ acked: chunk.length });
};
