// Adapts a `ws` WebSocket to a Link. Frames are carried as binary messages
// whose boundaries mean nothing: the byte stream is what counts, exactly as
// on TCP, so a frame may span messages and a message may hold many frames.
import type WebSocket from "ws";
import { LinkEvents, type Link } from "./link.js";

/** Above this many unsent bytes the link reports backpressure. */
const HIGH_WATER = 4 << 20;

export function wsLink(ws: WebSocket, description: string): Link {
  const events = new LinkEvents();
  let waitingDrain = false;
  ws.binaryType = "nodebuffer";
  ws.on("error", (err: Error) => {
    events.lastError = err;
  });
  ws.on("close", () => events.close());
  const onSent = () => {
    if (waitingDrain && ws.bufferedAmount < HIGH_WATER / 2) {
      waitingDrain = false;
      events.drain();
    }
  };
  return {
    description,
    ...events.register,
    write(chunks) {
      if (events.closed || ws.readyState !== ws.OPEN) return true;
      const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      ws.send(buf, { binary: true }, onSent);
      if (ws.bufferedAmount >= HIGH_WATER) {
        waitingDrain = true;
        return false;
      }
      return true;
    },
    close() {
      ws.close();
      setTimeout(() => ws.terminate(), 5000).unref();
    },
    onData(cb) {
      ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
        if (Array.isArray(data)) for (const d of data) cb(d);
        else cb(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
      });
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
  };
}
