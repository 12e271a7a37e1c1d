// A TCP socket joined to a pair of streams, both ways: what the socket
// reads goes out on `out`, what `input` receives is written to the socket.
// The agent's end of a port forward and the CLI's are the same join. Flow
// control is the streams': the socket is paused while more than 256 KiB of
// what it read waits for the peer's credit, and the input stream's bytes
// are taken only as fast as the socket accepts them. Each direction's end
// is a half-close (sockets made with allowHalfOpen).
import type net from "node:net";
import type { InStream, OutStream } from "./stream.js";

const MAX_UNSENT = 256 << 10;

/** Resolves once both directions have ended (or the socket closed). */
export function joinSocket(sock: net.Socket, out: OutStream, input: InStream): Promise<void> {
  let toPeer!: () => void;
  let fromPeer!: () => void;
  const done = Promise.all([new Promise<void>((r) => (toPeer = r)), new Promise<void>((r) => (fromPeer = r))]).then(() => {});
  let unsent = 0;
  sock.on("data", (chunk: Buffer) => {
    unsent += chunk.length;
    if (unsent > MAX_UNSENT) sock.pause();
    out.write(chunk).then(
      () => {
        unsent -= chunk.length;
        if (unsent <= MAX_UNSENT && sock.isPaused()) sock.resume();
      },
      () => sock.destroy(), // the peer reset its side
    );
  });
  sock.on("end", () => {
    out.end();
    toPeer();
  });
  sock.on("error", () => {});
  sock.on("close", () => {
    out.end();
    input.reset("connection closed");
    toPeer();
    fromPeer();
  });
  input.pipeTo({
    data: (chunk, ack) => (sock.destroyed ? ack() : void sock.write(chunk, () => ack())),
    end: () => {
      sock.end();
      fromPeer();
    },
    abort: () => {
      sock.destroy();
      fromPeer();
    },
  });
  return done;
}
