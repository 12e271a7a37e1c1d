// bench-containers' baseline for the agent's memory: a Bun hello-world,
// compiled as the agent is, that stays up long enough to settle and then
// prints its own resident set (KiB), in the same guest as the agent.
// (No top-level await: --bytecode builds CommonJS.)
import fs from "node:fs";

console.log("hello");
setTimeout(() => {
  const status = fs.readFileSync("/proc/self/status", "utf8");
  for (const field of ["VmRSS", "RssAnon", "RssFile", "RssShmem"]) console.log(`${field} ${new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? "?"}`);
}, 2000);
