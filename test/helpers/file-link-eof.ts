// Run with bun (fileLink reads through Bun.file streams, which vitest's Node
// lacks): a FIFO stands in for a virtio-serial port, whose reads return EOF
// while no host is attached. Writers come and go; `stillGone` says whether
// the peer is really gone. Prints what the link delivered and how many
// EOFs it reported, as JSON.
import { fileLink } from "../../proto/file-link.js";
import { fifoPort } from "./fifo-port.js";

const { fd, write, remove } = fifoPort();
let gone = false;
let eofs = 0;
let data = "";
let closed = false;
const link = fileLink(fd, "fifo", { onEof: () => eofs++, rearmMs: 20, stillGone: () => gone });
link.onData((b) => (data += Buffer.from(b).toString()));
link.onClose(() => (closed = true));
const settle = () => Bun.sleep(200);

write("a"); // a writer that leaves: EOF, but the peer is back at once
await settle();
write("b");
await settle();
const whileBack = eofs;
gone = true; // now it stays away
await settle();
console.log(JSON.stringify({ data, whileBack, afterGone: eofs, open: !closed }));
link.close();
remove();
process.exit(0);
