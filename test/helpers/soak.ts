// Drives one agent with many execs over one connection and reports, as JSON
// on stdout, how many ran and whether every one gave the right output and
// status. Run with bun: `bun test/helpers/soak.ts URL SEQUENTIAL CONCURRENT`
// (vitest runs on Node; the client library speaks through Bun's sockets).
import { AgentClient, exitStatusOf } from "../../host/client.js";

const [url, seqArg, concArg] = process.argv.slice(2);
const sequential = Number(seqArg);
const concurrent = Number(concArg);
const client = await AgentClient.connect(url!);

async function run(i: number): Promise<boolean> {
  const p = await client.exec({ argv: ["sh", "-c", `echo ${i}; exit ${i % 7}`] });
  let out = "";
  p.onStdout((b) => void (out += Buffer.from(b).toString()));
  const status = exitStatusOf(await p.wait());
  return out === `${i}\n` && status === i % 7;
}

const t0 = performance.now();
let bad = 0;
for (let i = 0; i < sequential; i++) if (!(await run(i))) bad++;
const results = await Promise.all(Array.from({ length: concurrent }, (_, i) => run(i)));
bad += results.filter((ok) => !ok).length;
client.close();
process.stdout.write(JSON.stringify({ sequential, concurrent, bad, ms: Math.round(performance.now() - t0) }));
process.exit(0);
