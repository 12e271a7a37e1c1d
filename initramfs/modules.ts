// Resolves the kernel modules the guest needs, with their dependencies, from
// the kernel's own metadata: modules.order maps names to files, each module's
// .modinfo section names what it depends on, and modules.builtin says what
// needs no file at all. Nothing here is written per kernel version.
//
// Usage (bun): modules.ts MODULES_DIR OUT_DIR name... [--later name...]
// Writes OUT_DIR/<relative .ko paths> (decompressed) and OUT_DIR/fractal.order,
// the load order with every module after its dependencies. Names after
// --later (NIC drivers for hardware) go, with whatever dependencies the first
// list did not bring, to OUT_DIR/fractal-later.order: the agent loads those
// once its listeners are up, so a VM's boot does not wait for drivers of
// hardware it lacks.
import fs from "node:fs";
import path from "node:path";
import { gunzipSync } from "node:zlib";

const [modDir, outDir, ...names] = process.argv.slice(2);
const split = names.indexOf("--later");
const wanted = split < 0 ? names : names.slice(0, split);
const later = split < 0 ? [] : names.slice(split + 1);
if (!modDir || !outDir || wanted.length === 0) {
  process.stderr.write("usage: modules.ts MODULES_DIR OUT_DIR NAME... [--later NAME...]\n");
  process.exit(2);
}

/** Module names treat - and _ alike (as modprobe does). */
const norm = (n: string) => n.replace(/-/g, "_");
const stem = (rel: string) => norm(path.basename(rel).replace(/\.ko(\.(xz|zst|gz))?$/, ""));

function lines(file: string): string[] {
  try {
    return fs.readFileSync(path.join(modDir!, file), "utf8").split("\n").filter((l) => l !== "");
  } catch {
    return [];
  }
}

const builtin = new Set(lines("modules.builtin").map(stem));
const files = new Map<string, string>();
for (const rel of lines("modules.order")) files.set(stem(rel), rel);
// modules.order may lag behind the tree (hand-built kernels): fall back to a walk.
if (files.size === 0) {
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(modDir!, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) files.set(stem(rel), rel);
    }
  };
  walk("kernel");
}

function readModule(rel: string): Buffer {
  const abs = path.join(modDir!, rel.replace(/\.ko$/, ".ko"));
  const candidates = [abs, `${abs}.xz`, `${abs}.zst`, `${abs}.gz`].filter((p) => fs.existsSync(p));
  const file = candidates[0] ?? abs;
  const raw = fs.readFileSync(file);
  if (file.endsWith(".gz")) return gunzipSync(raw);
  if (file.endsWith(".xz") || file.endsWith(".zst")) {
    // Decompressed on the host: the guest kernel may lack in-kernel decompression.
    const tool = file.endsWith(".xz") ? ["xz", "-dc"] : ["zstd", "-dc"];
    const r = Bun.spawnSync([...tool, file]);
    if (r.exitCode !== 0) throw new Error(`${tool[0]} failed on ${file}`);
    return Buffer.from(r.stdout);
  }
  return raw;
}

/** Every value of one key in a module's .modinfo (NUL-separated key=value strings). */
function modinfo(ko: Buffer, key: string): string[] {
  const needle = Buffer.from(`\0${key}=`);
  const out: string[] = [];
  for (let at = ko.indexOf(needle); at >= 0; at = ko.indexOf(needle, at + 1)) {
    const end = ko.indexOf(0, at + needle.length);
    out.push(ko.subarray(at + needle.length, end).toString());
  }
  return out;
}

function depends(ko: Buffer): string[] {
  return modinfo(ko, "depends")
    .flatMap((v) => v.split(","))
    .filter((d) => d !== "")
    .map(norm);
}

/**
 * "softdep=pre: crc32c" names a module that must be loaded first but is not
 * a symbol dependency, often by an alias (crc32c is provided by
 * crc32c_generic or an arch-optimised one). Returns the names to load.
 */
function softdeps(ko: Buffer): string[] {
  const names: string[] = [];
  for (const v of modinfo(ko, "softdep")) {
    const m = /pre:\s*([^:]*?)(?:\s+post:|$)/.exec(v);
    if (m) names.push(...m[1]!.split(/\s+/).filter((x) => x !== "").map(norm));
  }
  return names;
}

let aliasIndex: Map<string, string> | undefined;
/** Maps aliases to module names by reading the crypto and arch modules' modinfo (only when needed). */
function byAlias(name: string): string | undefined {
  if (!aliasIndex) {
    aliasIndex = new Map();
    for (const [mod, rel] of [...files].sort()) {
      if (!/^kernel\/(crypto|arch)\//.test(rel)) continue;
      for (const a of modinfo(readModule(rel), "alias")) if (!aliasIndex.has(norm(a))) aliasIndex.set(norm(a), mod);
    }
  }
  return aliasIndex.get(name) ?? aliasIndex.get(`crypto_${name}`);
}

function resolveName(name: string): string | undefined {
  if (files.has(name) || builtin.has(name)) return name;
  return byAlias(name);
}

const order: string[] = [];
const state = new Map<string, "visiting" | "done">();
const contents = new Map<string, Buffer>();
function visit(name: string, chain: string[]): void {
  if (state.get(name) === "done" || builtin.has(name)) return;
  if (state.get(name) === "visiting") throw new Error(`dependency cycle: ${[...chain, name].join(" -> ")}`);
  const rel = files.get(name);
  if (!rel) throw new Error(`module ${name} is neither built in nor in ${modDir} (needed by ${chain.join(" -> ") || "fractal"})`);
  state.set(name, "visiting");
  const ko = readModule(rel);
  for (const d of depends(ko).sort()) visit(d, [...chain, name]);
  for (const soft of softdeps(ko).sort()) {
    const target = resolveName(soft);
    // A soft dependency that this kernel lacks is not an error: the module may still load.
    if (target) visit(target, [...chain, name]);
  }
  state.set(name, "done");
  contents.set(rel, ko);
  order.push(rel.replace(/\.ko\.(xz|zst|gz)$/, ".ko"));
}

let failed = false;
const visitAll = (list: string[]) => {
  for (const w of list.map(norm)) {
    try {
      visit(w, []);
    } catch (err) {
      process.stderr.write(`modules: ${(err as Error).message}\n`);
      failed = true;
    }
  }
};
visitAll(wanted);
const bootCount = order.length;
visitAll(later);
if (failed) process.exit(1);

fs.rmSync(outDir, { recursive: true, force: true });
for (const [rel, ko] of contents) {
  const dst = path.join(outDir, rel.replace(/\.ko\.(xz|zst|gz)$/, ".ko"));
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.writeFileSync(dst, ko);
}
const orderText = (list: string[]) => list.map((l) => `${l}\n`).join("");
fs.writeFileSync(path.join(outDir, "fractal.order"), orderText(order.slice(0, bootCount)));
if (later.length > 0) fs.writeFileSync(path.join(outDir, "fractal-later.order"), orderText(order.slice(bootCount)));
const builtIn = [...wanted, ...later].filter((w) => builtin.has(norm(w)));
process.stdout.write(
  `modules: ${bootCount} to load at boot (${wanted.length} asked for, the rest dependencies), ${order.length - bootCount} once listening (${later.length} asked for); built in: ${builtIn.join(", ") || "none"}\n`,
);
