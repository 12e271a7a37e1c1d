// A container's command is found as execve(2) in the container would find
// it: absolute names from its root, relative names with a slash from the
// working directory, bare names through PATH.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkCommand } from "../../agent/containers/lookup.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-lookup-"));
const file = (rel: string, mode: number) => {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.writeFileSync(path.join(root, rel), "#!/bin/sh\n", { mode });
};
file("usr/bin/sh", 0o755);
file("app/run.sh", 0o755);
file("app/data.txt", 0o644);
file("usr/local/bin/tool", 0o755);
// merged /usr, as debootstrap makes it
fs.symlinkSync("usr/bin", path.join(root, "bin"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const codeOf = (f: () => void): number | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as FractalError).code;
  }
};
const PATH = ["PATH=/usr/local/bin:/usr/bin"];

describe("container command lookup", () => {
  it("finds an absolute command from the root whatever the working directory", () => {
    expect(codeOf(() => checkCommand(root, "/bin/sh", PATH, "/app"))).toBeUndefined();
    expect(codeOf(() => checkCommand(root, "/bin/sh", PATH, "/no/such/dir"))).toBeUndefined();
    expect(codeOf(() => checkCommand(root, "/app/run.sh", PATH, "/data"))).toBeUndefined();
  });

  it("finds a relative command from the working directory", () => {
    expect(codeOf(() => checkCommand(root, "./run.sh", PATH, "/app"))).toBeUndefined();
    expect(codeOf(() => checkCommand(root, "app/run.sh", PATH, "/"))).toBeUndefined();
    expect(codeOf(() => checkCommand(root, "./run.sh", PATH, "/"))).toBe(ErrorCode.COMMAND_NOT_FOUND);
  });

  it("finds a bare name through the image's PATH, and only there", () => {
    expect(codeOf(() => checkCommand(root, "tool", PATH, "/"))).toBeUndefined();
    expect(codeOf(() => checkCommand(root, "tool", ["PATH=/usr/bin"], "/"))).toBe(ErrorCode.COMMAND_NOT_FOUND);
    expect(codeOf(() => checkCommand(root, "run.sh", PATH, "/app"))).toBe(ErrorCode.COMMAND_NOT_FOUND);
  });

  it("tells a missing command (127) from one that cannot be executed (126)", () => {
    expect(codeOf(() => checkCommand(root, "/app/data.txt", PATH, "/"))).toBe(ErrorCode.COMMAND_NOT_EXECUTABLE);
    expect(codeOf(() => checkCommand(root, "/app", PATH, "/"))).toBe(ErrorCode.COMMAND_NOT_EXECUTABLE);
    expect(codeOf(() => checkCommand(root, "/nope", PATH, "/"))).toBe(ErrorCode.COMMAND_NOT_FOUND);
  });
});
