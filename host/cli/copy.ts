// `fractal-host cp`, as docker cp: SRC and DEST, one of them in the agent
// as CONTAINER:PATH (or :PATH for the guest itself), `-` for a tar on stdin
// or stdout. Files travel as a tar on one stream; a tar that comes back is
// unpacked here as untrusted input (no name in it reaches outside DEST).
import path from "node:path";
import type { AgentClient } from "../client.js";
import { copyTarget, packPath, resolveIn, unpackInto } from "../../oci/copy.js";
import { flag, parseFlags, usageError, value } from "./args.js";

export const cpHelp = `usage: fractal-host cp [--vm NAME] SRC DEST

Copies files between the host and a container (or the guest), as docker cp:
one of SRC and DEST is CONTAINER:PATH, or :PATH for the guest itself. A
directory is copied whole; into an existing directory DEST the copy goes
inside it, otherwise it takes DEST's name. "-" as SRC reads a tar from
stdin, as DEST writes a tar to stdout. Modes, owners, times and symlinks are
kept; paths in a container resolve inside its root (its symlinks cannot lead
out of it).

      --vm NAME       the VM
  -h, --help          this text
`;

export interface CpCommand {
  vm?: string;
  from: Side;
  to: Side;
}

type Side = { kind: "host"; path: string } | { kind: "agent"; container: string; path: string } | { kind: "tar" };

/** docker's rule: a colon before the first slash names a container. */
function side(arg: string): Side {
  if (arg === "-") return { kind: "tar" };
  const colon = arg.indexOf(":");
  const slash = arg.indexOf("/");
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    const p = arg.slice(colon + 1);
    if (!p.startsWith("/")) throw usageError("cp", `"${arg}": the path in the agent must be absolute`);
    return { kind: "agent", container: arg.slice(0, colon), path: p };
  }
  return { kind: "host", path: path.resolve(arg) };
}

export function parseCp(args: string[]): CpCommand | "help" {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "help", short: "h" }], "cp");
  if (flag(p, "help")) return "help";
  if (p.rest.length !== 2) throw usageError("cp", "give SRC and DEST");
  const [from, to] = [side(p.rest[0]!), side(p.rest[1]!)];
  if ((from.kind === "agent") === (to.kind === "agent")) throw usageError("cp", "one of SRC and DEST must be CONTAINER:PATH (or :PATH for the guest)");
  return { vm: value(p, "vm"), from, to };
}

export async function runCp(client: AgentClient, cmd: CpCommand): Promise<number> {
  const { from, to } = cmd;
  if (from.kind === "agent") {
    const tar = client.copyOut(from.container, from.path);
    if (to.kind === "tar") {
      for await (const chunk of tar) if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once("drain", r));
      return 0;
    }
    const dest = (to as { path: string }).path; // host: the agent side is SRC
    const { destRel, renameTop } = copyTarget("/", dest, dest);
    await unpackInto(tar, "/", destRel, renameTop);
    return 0;
  }
  const target = to as { container: string; path: string }; // parseCp made it the agent side
  if (from.kind === "tar") {
    await client.copyIn(target.container, target.path, process.stdin as AsyncIterable<Uint8Array>);
    return 0;
  }
  const { real } = resolveIn("/", from.path, from.path);
  const tar = packPath(real, path.basename(from.path) || ".") as AsyncIterable<Uint8Array>;
  await client.copyIn(target.container, target.path, tar);
  return 0;
}
