// Run with bun (serial-listen.ts binds libc through bun:ffi). A host on a
// serial line repeats its Hello until answered, so the agent can read a
// repeat after it answered the first, in the same read as the request the
// host sent once answered. Then a second host attaches without a hang-up,
// its Hello and a request in one read. Last, that host's session stops the
// device's reading (as one does while its answers back up) and the host
// hangs up. Prints, as JSON, the nonces the HelloAcks echoed, the ids of
// the responses in the order they came, how many sessions were started, and
// whether the device was left paused.
import { encodeFrame } from "../../proto/frame.js";
import type { Link } from "../../proto/link.js";
import { Epochs } from "../../proto/serial-listen.js";
import { Session } from "../../proto/session.js";
import { fakeSerialPort, hello } from "./fake-serial-port.js";

const { host, device, echoed, answered } = fakeSerialPort();
let paused = false;
device.pause = () => void (paused = true);
device.resume = () => void (paused = false);
let sessions = 0;
let last: Link | undefined;
const epochs = new Epochs(
  device,
  (link) => {
    sessions++;
    last = link;
    Session.accept(link, { name: "test agent", onRequest: async () => ({ ping: {} }) });
  },
  () => {},
);
const ping = (id: number) => encodeFrame({ request: { id, ping: {} } });
const oneRead = (...frames: Uint8Array[]) => host.data(Buffer.concat(frames));

host.data(hello(1));
await Bun.sleep(50);
oneRead(hello(1), ping(11)); // the repeat, sent before the answer came, and the request sent after it
await Bun.sleep(50);
oneRead(hello(2), ping(21)); // the next host, without a hang-up between
await Bun.sleep(50);
last?.pause?.();
epochs.hangUp();
console.log(JSON.stringify({ echoed, answered, sessions, pausedAfterHangUp: paused }));
process.exit(0);
