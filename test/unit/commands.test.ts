// The agent's edge for wire types: every request decoded once into a plain,
// validated command, whatever handler serves it.
import { describe, expect, it } from "vitest";
import { decodeRequest, policyName } from "../../agent/commands.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Request } from "../../proto/wire.js";
import { pb } from "../../proto/wire.js";

/** As the agent gets them: encoded and decoded by protobufjs, so oneofs are set as on the wire. */
const wire = (req: Request) => pb.Request.decode(pb.Request.encode(req).finish());
const codeOf = (req: Request): number | undefined => {
  try {
    decodeRequest(wire(req));
    return undefined;
  } catch (err) {
    return (err as FractalError).code;
  }
};

describe("request decoding", () => {
  it("fills defaults once: a bare exec gets no user, no terminal, no streams", () => {
    const c = decodeRequest(wire({ id: 1, exec: { argv: ["true"] } }));
    expect(c).toEqual({
      kind: "exec",
      exec: { argv: ["true"], env: [], replaceEnv: false, cwd: "", user: undefined, tty: undefined, stdio: { stdin: 0, stdout: 0, stderr: 0 }, namespace: undefined, container: undefined },
    });
    const t = decodeRequest(wire({ id: 1, run: { image: "busybox", tty: {} } }));
    expect(t.kind === "run" && t.run.tty).toEqual({ cols: 80, rows: 24, term: undefined });
  });

  it("validates environment names for every request that takes them, container exec included", () => {
    for (const env of [[{ key: "" }], [{ key: "A=B", value: "x" }]]) {
      expect(codeOf({ id: 1, exec: { argv: ["true"], env } })).toBe(ErrorCode.INVALID_ARGUMENT);
      expect(codeOf({ id: 1, exec: { argv: ["true"], env, container: "web" } })).toBe(ErrorCode.INVALID_ARGUMENT);
      expect(codeOf({ id: 1, run: { image: "busybox", env } })).toBe(ErrorCode.INVALID_ARGUMENT);
    }
  });

  it("refuses signals, window sizes and limits out of range, and empty names", () => {
    expect(codeOf({ id: 1, signal: { process: 1, signal: 0 } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, containerKill: { container: "x", signal: 65 } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, resize: { process: 1, cols: 0, rows: 24 } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, containerResize: { container: "x", cols: 80, rows: 70000 } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, run: { image: "busybox", memoryBytes: -1 } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, exec: { argv: [] } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, containerWait: { container: "" } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1, exec: { argv: ["ls"], namespace: { entries: [{ local: "relative" }] } } })).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf({ id: 1 })).toBe(ErrorCode.UNKNOWN_MESSAGE);
  });

  it("names requests for key policies, attach without stdin as logs", () => {
    expect(policyName(decodeRequest(wire({ id: 1, containerList: {} })))).toBe("container_list");
    expect(policyName(decodeRequest(wire({ id: 1, attach: { container: "x" } })))).toBe("logs");
    expect(policyName(decodeRequest(wire({ id: 1, attach: { container: "x", stdinStream: 3 } })))).toBe("attach");
  });

  it("checks a prepared root (containerd's snapshots): no option smuggled into overlayfs, upper and work together", () => {
    const run = (root: NonNullable<Request["run"]>["root"], extra: Partial<NonNullable<Request["run"]>> = {}) => ({ id: 1, run: { image: "containerd", command: ["true"], root, ...extra } });
    const ok = decodeRequest(wire(run({ lowers: ["/s/2/fs", "/s/1/fs"], upper: "/s/3/fs", work: "/s/3/work" }, { joinNamespaces: "pod", joinNamespaceTypes: ["pid", "ipc"] })));
    expect(ok.kind === "run" && ok.run.prepared).toMatchObject({ root: { kind: "overlay", lowers: ["/s/2/fs", "/s/1/fs"], upper: "/s/3/fs" }, joinNamespaces: "pod", joinTypes: ["pid", "ipc"] });
    expect(codeOf(run({ lowers: ["/s/1/fs,upperdir=/etc"], upper: "/u", work: "/w" }))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf(run({ lowers: ["/s/1/fs"], upper: "/u" }))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf(run({ lowers: ["relative"], upper: "/u", work: "/w" }))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf(run({ lowers: ["/s/1/fs"], upper: "/u", work: "/w" }, { joinNamespaces: "pod", joinNamespaceTypes: ["net"] }))).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(codeOf(run({ directory: "/s/1/fs", readonly: true }, { files: [{ path: "/etc/../x", content: new Uint8Array() }] }))).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});
