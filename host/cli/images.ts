// `fractal-host images` (a VM's store, or a store directory on the host) and
// `fractal-host image unpack STORE REF`.
import fs from "node:fs";
import path from "node:path";
import { hex } from "../../oci/digest.js";
import { asFractalError } from "../../oci/errors.js";
import { ImageStore } from "../../oci/store.js";
import type { AgentClient, ImageSummary } from "../client.js";
import { unpackImage } from "../image/unpack.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { table } from "./table.js";

export const imagesHelp = `usage: fractal-host images [--vm NAME] [--json]
       fractal-host images [--json] STORE

Lists the images in a VM's store (boot --images), or in a store directory
on this machine: reference, digest, size, layers, and whether every layer is
unpacked (in the guest's cache or by \`image unpack\`). --json prints the
REST API's ImageList.
`;

export const imageHelp = `usage: fractal-host image unpack STORE IMAGE
       fractal-host image unpack --vm NAME IMAGE

With STORE: unpacks IMAGE's layers on this machine into STORE/unpacked/,
once, so guests mount them as overlay lower layers over 9p or virtiofs
instead of unpacking them. With --vm: makes the guest unpack them into its
own layer cache now, so the first run starts at once.
`;

function mb(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}MB` : `${(n / 1e3).toFixed(1)}kB`;
}

function print(images: ImageSummary[], asJson = false, store = ""): void {
  if (asJson) {
    process.stdout.write(`${JSON.stringify({ store, images }, null, 2)}\n`);
    return;
  }
  const rows = [["IMAGE", "DIGEST", "SIZE", "LAYERS", "UNPACKED", "SOURCE"]];
  for (const i of images) rows.push([i.reference || "<none>", hex(i.digest).slice(0, 12), mb(i.size), String(i.layers), i.unpacked ? "yes" : "no", i.source]);
  process.stdout.write(table(rows, 3));
}

export function parseImages(args: string[]): { vm?: string; store?: string; json: boolean } | "help" {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "json" }, { long: "help", short: "h" }], "images");
  if (flag(p, "help")) return "help";
  if (p.rest.length > 1) throw usageError("images", `unexpected argument "${p.rest[1]}"`);
  if (p.rest.length === 1 && value(p, "vm")) throw usageError("images", "give a STORE or --vm, not both");
  return { vm: value(p, "vm"), store: p.rest[0], json: flag(p, "json") };
}

export function localImages(storeDir: string, asJson = false): number {
  const store = new ImageStore(path.resolve(storeDir));
  let scan;
  try {
    scan = store.scan();
  } catch (err) {
    throw asFractalError(err);
  }
  print(scan.images.map((i) => ({ reference: i.reference, digest: i.digest, size: i.size, source: i.source, layers: i.layers.length, unpacked: i.layers.every((l) => fs.existsSync(store.unpackedDir(l))) })), asJson, path.resolve(storeDir));
  for (const p of scan.problems) process.stderr.write(`fractal-host: images: ${p.source}: ${p.message}\n`);
  return scan.problems.length > 0 ? 1 : 0;
}

export async function remoteImages(client: AgentClient, asJson = false): Promise<number> {
  const r = await client.images();
  print(r.images, asJson, r.store);
  return 0;
}

const progressLine = (l: string) => process.stderr.write(`\r\x1b[K${l}`);

export async function runImageCommand(args: string[], connect: (vm: string | undefined) => Promise<AgentClient>, globalVm?: string): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    process.stdout.write(imageHelp);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== "unpack") throw usageError("image", `unknown subcommand "${sub}"`);
  const p = parseFlags(rest, [{ long: "vm", value: true }, { long: "help", short: "h" }], "image unpack");
  if (flag(p, "help")) return void process.stdout.write(imageHelp), 0;
  const vm = value(p, "vm") ?? globalVm;
  if (vm !== undefined) {
    if (p.rest.length !== 1) throw usageError("image unpack", "with --vm, give just the IMAGE");
    const client = await connect(vm);
    const tty = process.stderr.isTTY;
    await client.unpackImage(p.rest[0]!, tty ? progressLine : undefined);
    if (tty) process.stderr.write("\r\x1b[K");
    client.close();
    return 0;
  }
  const [storeDir, ref, ...extra] = p.rest;
  if (!storeDir || !ref) throw usageError("image unpack", "expected STORE IMAGE");
  if (extra.length > 0) throw usageError("image unpack", `unexpected argument "${extra[0]}"`);
  const store = new ImageStore(path.resolve(storeDir));
  try {
    const img = store.resolve(ref);
    const tty = process.stderr.isTTY;
    const report = await unpackImage(store, img, tty ? progressLine : undefined);
    if (tty) process.stderr.write("\r\x1b[K");
    for (const r of report) process.stdout.write(`${r.fresh ? "unpacked" : "present "} ${r.chainId.slice(0, 19)} ${path.relative(store.dir, r.dir)}${r.fresh ? ` (${r.entries} entries)` : ""}\n`);
    return 0;
  } catch (err) {
    throw asFractalError(err);
  }
}
