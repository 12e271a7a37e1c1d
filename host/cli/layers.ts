// `fractal-host layer add|rm|ls`: images stacked into a running container.
import type { AgentClient, LayerSummary } from "../client.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { table, timestamp } from "./table.js";

export const layerHelp = `usage: fractal-host layer add [--vm NAME] [--at PATH] [--ro] CONTAINER IMAGE
       fractal-host layer rm [--vm NAME] CONTAINER LAYER-ID
       fractal-host layer ls [--vm NAME] [--json] CONTAINER

Stacks an image's layers into a running container, live: its files appear
at PATH (default /, over the container's root) at once, for processes
already running too, under the container's own writes, which stay on top
and visible. Files the container has open keep working through add and rm.
rm takes an added image out again (what the container wrote while it was
there stays). ls lists the container's stack: its image, images given with
run --layer, and added ones, bottom first.

At /, an image is stacked at each top-level directory it has (/usr, /opt,
...), except /dev, /proc, /sys and where the container has a symlink (as
/bin -> usr/bin): its top-level files are not shown.

      --vm NAME     the VM
      --at PATH     where in the container (default /)
      --ro          the container cannot write where the image is stacked
  -h, --help        this text
`;

export type LayerCommand =
  | { kind: "add"; vm?: string; container: string; image: string; at: string; readonly: boolean }
  | { kind: "rm"; vm?: string; container: string; layer: string }
  | { kind: "ls"; vm?: string; container: string; json: boolean };

export function parseLayer(args: string[]): LayerCommand | "help" {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h") return "help";
  const specs = [{ long: "vm", value: true }, { long: "help", short: "h" }];
  const want = (n: number, what: string, p: { rest: string[] }) => {
    if (p.rest.length !== n) throw usageError(`layer ${sub}`, `give ${what}`);
  };
  switch (sub) {
    case "add": {
      const p = parseFlags(rest, [...specs, { long: "at", value: true }, { long: "ro" }], "layer add");
      if (flag(p, "help")) return "help";
      want(2, "CONTAINER and IMAGE", p);
      const at = value(p, "at") ?? "/";
      if (!at.startsWith("/")) throw usageError("layer add", `--at ${at}: the path must be absolute`);
      return { kind: "add", vm: value(p, "vm"), container: p.rest[0]!, image: p.rest[1]!, at, readonly: flag(p, "ro") };
    }
    case "rm": {
      const p = parseFlags(rest, specs, "layer rm");
      if (flag(p, "help")) return "help";
      want(2, "CONTAINER and LAYER-ID", p);
      return { kind: "rm", vm: value(p, "vm"), container: p.rest[0]!, layer: p.rest[1]! };
    }
    case "ls": {
      const p = parseFlags(rest, [...specs, { long: "json" }], "layer ls");
      if (flag(p, "help")) return "help";
      want(1, "CONTAINER", p);
      return { kind: "ls", vm: value(p, "vm"), container: p.rest[0]!, json: flag(p, "json") };
    }
    default:
      throw usageError("layer", `unknown command "${sub}" (one of add, rm, ls)`);
  }
}

export async function runLayer(client: AgentClient, cmd: LayerCommand): Promise<number> {
  try {
    switch (cmd.kind) {
      case "add": {
        const l = await client.layerAdd(cmd.container, cmd.image, { at: cmd.at, readonly: cmd.readonly, onProgress: (line) => process.stderr.write(`${line}\n`) });
        process.stdout.write(`${l.id}\n`);
        return 0;
      }
      case "rm":
        await client.layerRemove(cmd.container, cmd.layer);
        return 0;
      case "ls": {
        const layers = await client.layers(cmd.container);
        process.stdout.write(cmd.json ? `${JSON.stringify({ layers }, null, 2)}\n` : layerTable(layers));
        return 0;
      }
    }
  } finally {
    client.close();
  }
}

export function layerTable(layers: LayerSummary[]): string {
  const rows = [["LAYER ID", "IMAGE", "DIGEST", "LAYERS", "AT", "MODE", "ADDED", "HOW"]];
  for (const l of layers) {
    rows.push([l.id, l.image, l.digest.replace(/^sha256:/, "").slice(0, 12) || "-", String(l.diffIds.length), l.at, l.readonly ? "ro" : "rw", timestamp(l.addedMs), l.how]);
  }
  return table(rows, 3);
}
