// Drives an interactive busybox shell behind any client (ctr run -t, ctr
// task exec -t, crictl exec -it) on a real terminal, as a user would: type
// arithmetic, read the window size, resize the window, read it again, exit 5.
// Prints what the user saw as JSON. Run with bun: `bun pty-shell.ts CMD...`.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let output = "";
async function until(re: RegExp, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!re.test(output)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${re}; output so far: ${JSON.stringify(output)}`);
    await sleep(20);
  }
}
const proc = Bun.spawn(process.argv.slice(2), {
  terminal: {
    cols: 100,
    rows: 30,
    data(_t, d) {
      output += new TextDecoder().decode(d);
    },
  },
});
const term = proc.terminal!;
const result: Record<string, unknown> = {};
try {
  await until(/# /);
  term.write("echo $((6*7)); stty size\r");
  await until(/30 100/);
  term.resize(120, 40);
  await sleep(1000);
  term.write("stty size\r");
  await until(/40 120/);
  term.write("exit 5\r");
  result.exitCode = await proc.exited;
} catch (err) {
  proc.kill();
  result.error = (err as Error).message;
}
result.output = output;
term.close();
process.stdout.write(JSON.stringify(result));
export {};
