// A serial device faked for the epoch tests (run with bun): the host side
// feeds bytes with host.data(); what the agent writes back is decoded, and
// the HelloAcks' nonces (their first byte) and the responses' ids are kept
// in the order they came.
import { encodeFrame, FrameDecoder } from "../../proto/frame.js";
import { LinkEvents, type Link } from "../../proto/link.js";

export function fakeSerialPort(): { host: LinkEvents; device: Link; echoed: number[]; answered: number[] } {
  const host = new LinkEvents();
  const decoder = new FrameDecoder({ resync: true });
  const echoed: number[] = [];
  const answered: number[] = [];
  const device: Link = {
    description: "fake port",
    resync: true,
    ...host.register,
    write(chunks) {
      for (const c of chunks) decoder.feed(c);
      for (let f = decoder.next(); f; f = decoder.next()) {
        if (f.helloAck) echoed.push(f.helloAck.helloNonce?.[0] ?? -1);
        if (f.response) answered.push(f.response.id ?? -1);
      }
      return true;
    },
    close: () => host.close(),
  };
  return { host, device, echoed, answered };
}

/** Host n's Hello: its nonce is 16 bytes of n. */
export const hello = (n: number) =>
  encodeFrame({ hello: { minVersion: 1, maxVersion: 1, initialWindow: 1 << 20, maxFrame: 1 << 20, client: `host ${n}`, nonce: new Uint8Array(16).fill(n) } });
