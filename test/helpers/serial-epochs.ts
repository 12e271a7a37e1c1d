// Run with bun (serial-listen.ts binds libc through bun:ffi, which vitest's
// Node lacks): one serial device, faked, carries three hosts in turn, each
// opening with a Hello that carries its own nonce. The second attaches
// without a hang-up between (a UART has none; a virtio-serial host can
// attach within the pause after an EOF): the old session sees its Hello
// and hands it to a new one. The third comes after a hang-up. Prints, as
// JSON, the nonces the HelloAcks echoed and how many sessions were started.
import { Epochs } from "../../proto/serial-listen.js";
import { Session } from "../../proto/session.js";
import { fakeSerialPort, hello } from "./fake-serial-port.js";

const { host, device, echoed } = fakeSerialPort();
let sessions = 0;
const epochs = new Epochs(
  device,
  (link) => {
    sessions++;
    Session.accept(link, { name: "test agent" });
  },
  () => {},
);

host.data(hello(1));
await Bun.sleep(50);
host.data(hello(2)); // no hang-up before it
await Bun.sleep(50);
epochs.hangUp();
host.data(hello(3));
await Bun.sleep(50);
console.log(JSON.stringify({ echoed, sessions }));
process.exit(0);
