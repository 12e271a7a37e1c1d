// bench-peers' floor for the 1-byte echo: the least a Bun program can do for
// it, compiled as the agent is and run in the same guest. Each TCP
// connection gets a `cat` whose stdin takes the connection's bytes and whose
// stdout goes back as it comes: no framing, no streams, no flow control, no
// key. What fractal's echo costs beyond this is the agent's; this much is
// Bun's event loop and process plumbing under the guest's CPU.
// (No top-level await: --bytecode builds CommonJS.)
import type { Subprocess } from "bun";

type Cat = Subprocess<"pipe", "pipe", "inherit">;

const port = Number(process.argv[2] ?? 9100);
const cat = process.argv[3] ?? "cat";

Bun.listen<{ cat: Cat }>({
  hostname: "0.0.0.0",
  port,
  socket: {
    open(s) {
      s.data = { cat: Bun.spawn([cat], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }) };
      void (async () => {
        for await (const chunk of s.data.cat.stdout) s.write(chunk);
        s.end();
      })();
    },
    data(s, bytes) {
      s.data.cat.stdin.write(bytes);
      void s.data.cat.stdin.flush();
    },
    close(s) {
      void s.data.cat.stdin.end();
    },
  },
});
console.log(`echo-floor listening on ${port}`);
