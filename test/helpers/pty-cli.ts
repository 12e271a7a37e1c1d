// Runs build/fractal-host on a real local terminal (Bun.Terminal) and reports,
// as JSON on stdout, what a user at that terminal would have seen. Run with
// bun: `bun test/helpers/pty-cli.ts SCENARIO AGENT_URL`. vitest (on Node) has
// no PTY of its own, so this helper is how tests drive `exec -t` for real.
// AGENT_URL "vm:NAME" means --vm NAME; words after it replace the default
// `exec -i -t --` (e.g. `run --rm -it busybox`).
import path from "node:path";

const ICANON = 0o2; // <asm-generic/termbits.h> c_lflag bits
const ECHO = 0o10;

const [scenario, url, ...prefixArg] = process.argv.slice(2);
const target = url!.startsWith("vm:") ? ["--vm", url!.slice(3)] : ["--connect", url!];
const prefix = prefixArg.length > 0 ? prefixArg : ["exec", "-i", "-t", "--"];
const cli = path.resolve(import.meta.dir, "../../build/fractal-host");
let output = "";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(re: RegExp, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!re.test(output)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${re}; output so far: ${JSON.stringify(output)}`);
    await sleep(20);
  }
}

const scripts: Record<string, string[]> = {
  resize: ["sh", "-c", "stty size; read x; stty size; exit 7"],
  ctrlc: ["sh", "-c", "trap 'echo got-INT; exit 9' INT; echo ready; while :; do sleep 0.1; done"],
  // An interactive bash, typed at as a user would.
  bash: ["bash"],
};
// Inline terminal options (not a shared Bun.Terminal): only then does Bun
// make the PTY the child's controlling terminal, which SIGWINCH needs.
const proc = Bun.spawn([cli, ...target, ...prefix, ...scripts[scenario!]!], {
  terminal: {
    cols: 100,
    rows: 30,
    data(_t, d) {
      output += new TextDecoder().decode(d);
    },
  },
});
const term = proc.terminal!; // spawned with `terminal`
const raw = () => (term.localFlags & (ICANON | ECHO)) === 0;
const result: Record<string, unknown> = { scenario };
if (scenario === "bash") {
  await until(/[#$] $/);
  result.rawWhileRunning = raw();
  term.write('echo "bash $BASH_VERSION on $(tty)"; exit 5\r');
} else if (scenario === "resize") {
  await until(/30 100/);
  result.rawWhileRunning = raw();
  term.resize(120, 40);
  await sleep(500);
  term.write("\r");
} else {
  await until(/ready/);
  result.rawWhileRunning = raw();
  term.write("\x03");
}
result.exitCode = await proc.exited;
await sleep(100);
result.restored = !raw();
result.output = output;
term.close();
process.stdout.write(JSON.stringify(result));
