// The API's JSON shapes (OpenAPI 3.0 schema objects), named once: the
// OpenAPI document lists them, the routes name them, the tests validate
// real responses against them, and the CLI's --json prints the same shapes.
type Schema = Record<string, unknown>;

const str = { type: "string" };
const int = { type: "integer" };
const num = { type: "number" };
const bool = { type: "boolean" };
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const obj = (properties: Record<string, Schema>, required: string[] = Object.keys(properties)): Schema => ({ type: "object", properties, required, additionalProperties: false });
const arr = (items: Schema) => ({ type: "array", items });

export const schemas: Record<string, Schema> = {
  Error: obj({ error: obj({ code: { ...str, description: "stable: the protocol's ErrorCode name" }, message: str }) }),
  Vm: obj({
    name: str,
    state: { type: "string", enum: ["running", "stale"] },
    accel: str,
    pid: int,
    memMiB: int,
    cpus: int,
    created: str,
    endpoints: { type: "object", additionalProperties: { type: "string" } },
    tpm: { ...bool, description: "booted with --tpm (docs/attestation.md)" },
    attestation: { ...obj({ at: str, passed: bool, failed: arr(str), message: str }), nullable: true, description: "the last attestation since this boot; null: none" },
  }),
  VmList: obj({ vms: arr(ref("Vm")) }),
  BootRequest: obj({ name: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$" }, images: str, memMiB: { type: "integer", minimum: 64 }, cpus: { type: "integer", minimum: 1, maximum: 64 } }, ["name"]),
  StopResult: obj({ name: str, how: { type: "string", enum: ["shutdown", "killed", "stale"] } }),
  Image: obj({ reference: str, digest: str, size: num, layers: int, unpacked: bool, source: str }),
  ImageList: obj({ store: str, images: arr(ref("Image")) }),
  Exit: obj({ exitCode: int, signal: { type: "integer", nullable: true }, oomKilled: bool }),
  Mount: obj({ source: str, destination: str, readonly: bool }),
  Container: obj({
    id: str,
    name: str,
    image: str,
    command: arr(str),
    state: { type: "string", enum: ["running", "exited"] },
    createdMs: num,
    finishedMs: num,
    exit: { ...ref("Exit"), nullable: true },
    pid: int,
    tty: bool,
    interactive: bool,
    mounts: arr(ref("Mount")),
  }),
  ContainerList: obj({ containers: arr(ref("Container")) }),
  Layer: obj({ id: str, image: str, digest: str, diffIds: arr(str), at: str, readonly: bool, addedMs: num, how: str, removable: bool }),
  LayerList: obj({ layers: arr(ref("Layer")) }),
  ContainerDetail: obj({ container: ref("Container"), layers: arr(ref("Layer")) }),
  RunRequest: obj(
    {
      image: { type: "string", minLength: 1 },
      name: str,
      command: arr(str),
      env: { type: "object", additionalProperties: { type: "string" } },
      cwd: str,
      user: str,
      tty: bool,
      interactive: bool,
      memoryBytes: { type: "integer", minimum: 0 },
      cpus: { type: "number", minimum: 0 },
      pids: { type: "integer", minimum: 0 },
    },
    ["image"],
  ),
  RunResult: obj({ id: str, name: str }),
  KillRequest: obj({ signal: { type: "integer", minimum: 1, maximum: 64 } }, []),
  ExecRequest: obj(
    {
      argv: { type: "array", items: str, minItems: 1 },
      env: { type: "object", additionalProperties: { type: "string" } },
      cwd: str,
      container: str,
      stdin: { type: "string", description: "bytes for the process's stdin (UTF-8)" },
    },
    ["argv"],
  ),
  ExecResult: obj({ exitCode: int, signal: { type: "integer", nullable: true }, stdout: str, stderr: str }),
};
