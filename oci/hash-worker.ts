// sha256 off the main thread: layer unpacking hashes every uncompressed
// byte, which under emulation costs more than decompressing, parsing and
// writing them; on a worker thread it overlaps with those.
// Messages in: a chunk, or null at the end; out: { acked } per chunk, then
// { digest }. After a digest the worker starts over, ready for the next
// stream (workers are pooled: starting one costs ~0.3 s under emulation).
import { createHash } from "node:crypto";

declare const self: { onmessage: (e: MessageEvent) => void; postMessage(m: unknown): void };

let hash = createHash("sha256");

self.onmessage = (e: MessageEvent) => {
  const chunk = e.data as Uint8Array | null;
  if (chunk === null) {
    self.postMessage({ digest: `sha256:${hash.digest("hex")}` });
    hash = createHash("sha256");
    return;
  }
  hash.update(chunk);
  self.postMessage({ acked: chunk.length });
};
