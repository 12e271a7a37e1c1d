// The last step of `make bench`: gathers build/bench/*.json (written by each
// bench-* target through bench/report.ts) into bench/results.json, a table in
// bench/results.md and a chart of the compared figures in bench/results.svg.
// A bench with no record here keeps its figures from the last collection
// (bench/results.json), so running one target and collecting does not drop
// the others' rows; the "Runs:" line says when each was measured.
import fs from "node:fs";
import path from "node:path";
import { RESULTS_DIR, type BenchEnv, type Check, type Figure } from "./report.js";

const OUT = path.resolve(import.meta.dir);
/** Read for the benches not run since, then written anew. */
const RESULTS_JSON = path.join(OUT, "results.json");
type Result = { bench: string; at: string; figures: Figure[]; checks?: { env: BenchEnv; rows: Check[] } };

const fresh: Result[] = fs.existsSync(RESULTS_DIR)
  ? fs.readdirSync(RESULTS_DIR).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, f), "utf8")) as Result)
  : [];
if (fresh.length === 0) {
  process.stderr.write(`no results in ${RESULTS_DIR}: run the bench-* targets first\n`);
  process.exit(1);
}
const ran = new Set(fresh.map((r) => r.bench));
const kept = lastCollection().filter((r) => !ran.has(r.bench));
const results = [...fresh, ...kept].sort((a, b) => a.bench.localeCompare(b.bench));

/** The records bench/results.json holds from the last collection; none when it is missing or unreadable. */
function lastCollection(): Result[] {
  try {
    const r: unknown = JSON.parse(fs.readFileSync(RESULTS_JSON, "utf8"));
    return Array.isArray(r) ? (r as Result[]) : [];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") process.stderr.write(`ignoring ${RESULTS_JSON}: ${(err as Error).message}\n`);
    return [];
  }
}

const num = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const envText = (e: BenchEnv) => `${e.accel}, ${e.hostCpus} CPUs, host ${e.hostKernel}${e.guestKernel ? `, guest ${e.guestKernel}` : ""}, ${e.transport}`;
// A table cell: the checks' texts may hold "|".
const cell = (s: string) => s.replace(/\|/g, "\\|");

const md: string[] = [
  "# Benchmark results",
  "",
  "Written by `make bench` (bench/collect.ts) from the bench-* targets' own records; see README.md for what each measures.",
  "\"advantage\" is how many times better fractal is (above 1: fractal wins; for times, peer ÷ fractal; for rates, fractal ÷ peer).",
  "",
  "![main ratios](results.svg)",
  "",
  "| bench | figure | fractal | peer | peer value | advantage | target | environment |",
  "|---|---|---|---|---|---|---|---|",
];
for (const r of results) {
  for (const f of r.figures) {
    md.push(
      `| ${r.bench} | ${f.figure} | ${num(f.fractal)} ${f.unit} | ${f.peer?.name ?? "—"} | ${f.peer ? `${num(f.peer.value)} ${f.unit}` : "—"} | ${f.advantage !== undefined ? `${num(f.advantage)}x` : "—"} | ${f.target ?? ""} | ${envText(f.env)} |`,
    );
  }
}
for (const r of results.filter((r) => r.checks !== undefined && r.checks.rows.length > 0)) {
  const { env, rows } = r.checks!;
  const held = rows.filter((c) => c.held).length;
  md.push("", `## ${r.bench}: what was tried and what held`, "", `${envText(env)}; ${held} held, ${rows.length - held} broke.`, "");
  md.push("| area | what was tried | result | what held |", "|---|---|---|---|");
  for (const c of rows) md.push(`| ${cell(c.area)} | ${cell(c.tried)} | ${c.held ? "held" : "**BROKE**"} | ${cell(c.result)} |`);
}
md.push("", `Runs: ${results.map((r) => `${r.bench} ${r.at}`).join("; ")}.`, "");
fs.writeFileSync(path.join(OUT, "results.md"), md.join("\n"));
fs.writeFileSync(RESULTS_JSON, JSON.stringify(results, null, 1) + "\n");

// The chart: one bar per compared figure, log scale, a line at 1x (parity).
const bars = results.flatMap((r) => r.figures.filter((f) => f.advantage !== undefined).map((f) => ({ label: `${r.bench}: ${f.figure} (${f.env.transport}) vs ${f.peer!.name}`, v: f.advantage! })));
const W = 1040;
const rowH = 26;
const left = 580;
const H = 40 + bars.length * rowH + 30;
const maxV = Math.max(10, ...bars.map((b) => b.v));
const minV = Math.min(0.1, ...bars.map((b) => b.v));
const x = (v: number) => left + ((Math.log10(v) - Math.log10(minV)) / (Math.log10(maxV) - Math.log10(minV))) * (W - left - 60);
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const svg: string[] = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
  `<rect width="${W}" height="${H}" fill="white"/>`,
  `<text x="10" y="20" font-size="14" font-weight="bold">fractal's advantage (log scale; right of the line: fractal better)</text>`,
];
bars.forEach((b, i) => {
  const y = 40 + i * rowH;
  const x0 = x(1);
  const x1 = x(b.v);
  svg.push(`<text x="10" y="${y + 15}">${esc(b.label)}</text>`);
  svg.push(`<rect x="${Math.min(x0, x1)}" y="${y + 4}" width="${Math.max(1, Math.abs(x1 - x0))}" height="${rowH - 10}" fill="${b.v >= 1 ? "#2a7" : "#c44"}"/>`);
  svg.push(`<text x="${Math.max(x0, x1) + 4}" y="${y + 15}">${num(b.v)}x</text>`);
});
svg.push(`<line x1="${x(1)}" y1="30" x2="${x(1)}" y2="${H - 25}" stroke="black"/>`);
for (const t of [0.1, 1, 10, 100, 1000].filter((t) => t >= minV && t <= maxV)) {
  svg.push(`<text x="${x(t) - 8}" y="${H - 8}" fill="#555">${t}x</text>`);
}
svg.push("</svg>");
fs.writeFileSync(path.join(OUT, "results.svg"), svg.join("\n") + "\n");
const from = kept.length > 0 ? `; kept from the last collection: ${kept.map((r) => `${r.bench} (${r.at})`).join(", ")}` : "";
process.stdout.write(`wrote bench/results.md, bench/results.json and bench/results.svg (${results.length} benches, ${bars.length} compared figures${from})\n`);
