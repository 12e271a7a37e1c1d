// `fractal-host volume ls|create|rm`: named volumes for run -v NAME:PATH.
import { ErrorCode, FractalError, exitStatusFor } from "../../proto/errors.js";
import type { AgentClient } from "../client.js";
import { readRecord, qemuAlive } from "../vm/state.js";
import { createVolume, findVolume, guestVolumePath, listVolumes, removeVolume } from "../vm/volumes.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { table, timestamp } from "./table.js";

export const volumeHelp = `usage: fractal-host volume ls [--vm NAME]
       fractal-host volume create [--vm NAME] VOLUME
       fractal-host volume rm [--vm NAME] [-f] VOLUME...

Named volumes: directories in a VM's state directory on the host, shared
with the guest at every boot, for run -v VOLUME:PATH (which makes them on
first use). They outlive the containers that use them and the VM's reboots;
only volume rm removes one, and it refuses a volume a container of the
running VM still has mounted (-f removes it anyway). ls without --vm lists
every VM's volumes, those of VMs powered off too.

      --vm NAME     the VM (default: the global --vm; for rm, the one VM
                    holding the volume)
  -f, --force       rm: even if a container uses it
  -h, --help        this text
`;

export type VolumeCommand =
  | { kind: "ls"; vm?: string }
  | { kind: "create"; vm: string; name: string }
  | { kind: "rm"; vm?: string; names: string[]; force: boolean };

export function parseVolumeCommand(args: string[], globalVm?: string): VolumeCommand | "help" {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h") return "help";
  const p = parseFlags(rest, [{ long: "vm", value: true }, { long: "force", short: "f" }, { long: "help", short: "h" }], `volume ${sub}`);
  if (flag(p, "help")) return "help";
  const vm = value(p, "vm") ?? globalVm;
  switch (sub) {
    case "ls":
      if (p.rest.length > 0) throw usageError("volume ls", `unexpected argument "${p.rest[0]}"`);
      return { kind: "ls", vm };
    case "create":
      if (p.rest.length !== 1) throw usageError("volume create", "give one volume name");
      if (!vm) throw usageError("volume create", "give --vm NAME: a volume belongs to a VM");
      return { kind: "create", vm, name: p.rest[0]! };
    case "rm":
      if (p.rest.length === 0) throw usageError("volume rm", "give the volumes to remove");
      return { kind: "rm", vm, names: p.rest, force: flag(p, "force") };
    default:
      throw usageError("volume", `unknown command "${sub}" (one of ls, create, rm)`);
  }
}

export async function runVolume(cmd: VolumeCommand, connect: (vm: string) => Promise<AgentClient>): Promise<number> {
  switch (cmd.kind) {
    case "ls": {
      const rows = [["VM", "VOLUME NAME", "CREATED", "HOST PATH"]];
      for (const v of listVolumes(cmd.vm)) rows.push([v.vm, v.name, timestamp(v.createdMs), v.hostPath]);
      process.stdout.write(table(rows, 3));
      return 0;
    }
    case "create":
      process.stdout.write(`${createVolume(cmd.vm, cmd.name).name}\n`);
      return 0;
    case "rm": {
      let status = 0;
      for (const name of cmd.names) {
        try {
          const v = findVolume(name, cmd.vm);
          if (!cmd.force) await refuseInUse(v.vm, name, connect);
          removeVolume(v);
          process.stdout.write(`${name}\n`);
        } catch (err) {
          process.stderr.write(`fractal-host: volume rm ${name}: ${(err as Error).message}\n`);
          status = exitStatusFor(err);
        }
      }
      return status;
    }
  }
}

/** As docker: a volume a container (running or not) still mounts stays. */
async function refuseInUse(vm: string, name: string, connect: (vm: string) => Promise<AgentClient>): Promise<void> {
  const rec = readRecord(vm);
  if (!rec || !qemuAlive(rec.pid)) return;
  const client = await connect(vm);
  try {
    const src = guestVolumePath(name);
    const users = (await client.containers(true)).filter((c) => c.mounts.some((m) => m.source === src || m.source.startsWith(`${src}/`)));
    if (users.length > 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `volume is in use by container${users.length > 1 ? "s" : ""} ${users.map((c) => c.name).join(", ")} (remove ${users.length > 1 ? "them" : "it"} first, or use -f)`);
  } finally {
    client.close();
  }
}
