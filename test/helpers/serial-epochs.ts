// Run with bun (serial-listen.ts binds libc through bun:ffi, which vitest's
// Node lacks): one serial device, faked, carries three hosts in turn, each
// opening with a Hello that carries its own nonce. The second attaches
// without a hang-up between (a UART has none; a virtio-serial host can
// attach within the pause after an EOF): the old session sees its Hello
// and hands it to a new one. The third comes after a hang-up. Prints, as
// JSON, the nonces the HelloAcks echoed and how many sessions were started.
import { encodeFrame, FrameDecoder } from "../../proto/frame.js";
import { LinkEvents, type Link } from "../../proto/link.js";
import { Epochs } from "../../proto/serial-listen.js";
import { Session } from "../../proto/session.js";

const host = new LinkEvents();
const decoder = new FrameDecoder({ resync: true });
const echoed: number[] = [];
const device: Link = {
  description: "fake port",
  resync: true,
  ...host.register,
  write(chunks) {
    for (const c of chunks) decoder.feed(c);
    for (let f = decoder.next(); f; f = decoder.next()) if (f.helloAck) echoed.push(f.helloAck.helloNonce?.[0] ?? -1);
    return true;
  },
  close: () => host.close(),
};
let sessions = 0;
const epochs = new Epochs(
  device,
  (link) => {
    sessions++;
    Session.accept(link, { name: "test agent" });
  },
  () => {},
);
const hello = (n: number) =>
  encodeFrame({ hello: { minVersion: 1, maxVersion: 1, initialWindow: 1 << 20, maxFrame: 1 << 20, client: `host ${n}`, nonce: new Uint8Array(16).fill(n) } });

host.data(hello(1));
await Bun.sleep(50);
host.data(hello(2)); // no hang-up before it
await Bun.sleep(50);
epochs.hangUp();
host.data(hello(3));
await Bun.sleep(50);
console.log(JSON.stringify({ echoed, sessions }));
process.exit(0);
