// Run with bun (fileLink reads through Bun.file streams, which vitest's Node
// lacks): a FIFO stands in for a virtio-serial port with no host attached,
// read through the listener's own hang-up check and waits (SIGIO). The wait's
// fallback timer is set far beyond the run, so bytes arrive in time only if
// the signal woke it. Prints, as JSON, what the link delivered and how many
// EOFs it reported while idle and after.
import { fileLink } from "../../proto/file-link.js";
import { hungUp } from "../../proto/libc.js";
import { nextSignal, untilPeer } from "../../proto/peer-wait.js";
import { fifoPort } from "./fifo-port.js";

const { fd, write, remove } = fifoPort();
let eofs = 0;
let data = "";
const link = fileLink(fd, "fifo", {
  onEof: () => eofs++,
  rearmMs: 20,
  stillGone: () => hungUp(fd),
  untilPeer: (abort) => untilPeer(fd, abort, 600_000),
  pause: (ms, abort) => nextSignal(fd, abort, ms),
});
let closed = false;
link.onData((b) => (data += Buffer.from(b).toString()));
link.onClose(() => (closed = true));

write("a"); // a host that came and went
await Bun.sleep(1000); // no host: the old loop reported an EOF every 20 ms here
const idle = eofs;
const t0 = performance.now();
write("b");
while (data !== "ab" && performance.now() - t0 < 10_000) await Bun.sleep(5);
await Bun.sleep(200);
console.log(JSON.stringify({ data, idle, after: eofs, open: !closed }));
link.close();
remove();
process.exit(0);
