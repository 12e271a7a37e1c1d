// Run with bun: dials serial://PTY?baud=RATE on the slave side of a fresh
// pseudo-terminal pair, the way `fractal-host --connect` opens a USB serial
// adapter, and prints (as JSON) what `stty -a` reports for the line before,
// while and after the link is open. vitest runs on Node, which has neither
// PTYs nor bun:ffi, hence this helper.
import { dial } from "../../proto/dial.js";

const baud = process.argv[2];
// A child on the terminal holds the pair open and tells us the slave's name.
let said = "";
const child = Bun.spawn(["sh", "-c", "tty; exec sleep 60"], {
  terminal: {
    data(_t, d) {
      said += Buffer.from(d).toString();
    },
  },
});
const end = Date.now() + 10_000;
while (!/\/dev\/pts\/\d+/.test(said)) {
  if (Date.now() > end) throw new Error(`no tty name from the child: ${JSON.stringify(said)}`);
  await Bun.sleep(10);
}
const pts = /\/dev\/pts\/\d+/.exec(said)![0];
const stty = () => Bun.spawnSync(["stty", "-F", pts, "-a"]).stdout.toString();

const before = stty();
let error = "";
let during = "";
try {
  const link = await dial(`serial://${pts}${baud ? `?baud=${baud}` : ""}`);
  during = stty();
  link.close();
} catch (err) {
  error = (err as Error).message;
}
const after = stty();
child.kill();
console.log(JSON.stringify({ pts, before, during, after, error }));
process.exit(0);
