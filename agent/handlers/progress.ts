// Progress as text lines on a stream the client opened for them (image
// unpacking during run, image unpack, layer add).
import type { Session } from "../../proto/session.js";

export function progressLines(session: Session, streamId: number): { line?: (l: string) => void; end(): void } {
  if (!streamId) return { end() {} };
  const out = session.openOut(streamId);
  return { line: (l) => void out.write(Buffer.from(`${l}\n`)).catch(() => {}), end: () => out.end() };
}
