// bench-containers' baseline for the agent's memory: a Bun hello-world,
// compiled as the agent is, that stays up long enough to settle and then
// prints its own /proc/self/status (read by the bench as the agent's is), in
// the same guest as the agent.
// (No top-level await: --bytecode builds CommonJS.)
import fs from "node:fs";

console.log("hello");
// console.log, not process.stdout.write: that loads node:stream, 2.7 MiB more baseline.
setTimeout(() => console.log(fs.readFileSync("/proc/self/status", "utf8")), 2000);
