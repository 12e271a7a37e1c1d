// cp against an agent on loopback (its "guest" is this machine, so both
// sides can be checked): a tree with modes, owners, times and symlinks both
// ways, docker's naming rules, a tar on stdout, and 512 MiB under flow
// control with a matching hash. test/vm/containers.test.ts copies in and out
// of a container whose symlinks point out of it.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOST_BIN, runCli, startAgent, type RunningAgent } from "../helpers/agent.js";

let agent: RunningAgent;
let dir: string;
const cp = (...args: string[]) => runCli(["--connect", agent.tcp, "cp", ...args]);

function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (p: string, rel: string) => {
    const st = fs.lstatSync(p);
    const kind = st.isDirectory() ? "d" : st.isSymbolicLink() ? `l->${fs.readlinkSync(p)}` : `f:${fs.readFileSync(p, "utf8").length}`;
    out.push(`${rel} ${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.isSymbolicLink() ? "" : Math.floor(st.mtimeMs / 1000)}`);
    if (st.isDirectory()) for (const c of fs.readdirSync(p).sort()) walk(path.join(p, c), `${rel}/${c}`);
  };
  walk(root, ".");
  return out;
}

beforeAll(async () => {
  agent = await startAgent();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-cp-"));
  const src = path.join(dir, "src");
  fs.mkdirSync(path.join(src, "sub/deeper"), { recursive: true });
  fs.writeFileSync(path.join(src, "a.txt"), "alpha\n", { mode: 0o640 });
  fs.writeFileSync(path.join(src, "sub/run.sh"), "#!/bin/sh\n", { mode: 0o755 });
  fs.writeFileSync(path.join(src, "sub/deeper/owned"), "by 1234\n");
  fs.chownSync(path.join(src, "sub/deeper/owned"), 1234, 5678);
  fs.symlinkSync("../a.txt", path.join(src, "sub/link"));
  fs.chmodSync(path.join(src, "sub"), 0o750);
  const t = new Date("2020-02-02T02:02:02Z");
  for (const p of ["a.txt", "sub/run.sh", "sub/deeper/owned", "sub/deeper", "sub", "."]) fs.utimesSync(path.join(src, p), t, t);
});
afterAll(async () => {
  await agent?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("cp", () => {
  it("copies a tree into the agent and back: modes, owners, times and symlinks kept", async () => {
    const into = path.join(dir, "in");
    fs.mkdirSync(into);
    expect((await cp(path.join(dir, "src"), `:${into}`)).code).toBe(0); // an existing directory: inside it
    expect(tree(path.join(into, "src"))).toEqual(tree(path.join(dir, "src")));
    const back = path.join(dir, "back");
    const r = await cp(`:${path.join(into, "src")}`, back); // a new name: the copy takes it
    expect(r.code, r.stderr).toBe(0);
    expect(tree(back)).toEqual(tree(path.join(dir, "src")));
  });

  it("writes a tar to stdout with -, and reads one from stdin", async () => {
    const r = await cp(`:${path.join(dir, "src/sub")}`, "-");
    expect(r.code).toBe(0);
    const list = spawnSync("tar", ["-tvf", "-"], { input: r.stdout, encoding: "utf8" }).stdout;
    expect(list).toMatch(/^drwxr-x--- .* sub\/$/m);
    expect(list).toMatch(/^lrwxrwxrwx .* sub\/link -> \.\.\/a\.txt$/m);
    expect(list).toMatch(/1234\/5678 .* sub\/deeper\/owned$/m);
    const dest = path.join(dir, "fromtar");
    fs.mkdirSync(dest);
    const w = spawnSync(HOST_BIN, ["--connect", agent.tcp, "cp", "-", `:${dest}`], { input: r.stdout, env: process.env });
    expect(w.status, w.stderr?.toString()).toBe(0);
    expect(fs.readlinkSync(path.join(dest, "sub/link"))).toBe("../a.txt");
  });

  it("moves 512 MiB out under flow control, intact", async () => {
    const big = path.join(dir, "big");
    const h = createHash("sha256");
    const fd = fs.openSync(big, "w");
    for (let i = 0; i < 512; i++) {
      const b = Buffer.alloc(1 << 20, i & 0xff);
      b.writeUInt32LE(i, 0);
      h.update(b);
      fs.writeSync(fd, b);
    }
    fs.closeSync(fd);
    const out = path.join(dir, "big.out");
    const r = await cp(`:${big}`, out);
    expect(r.code, r.stderr).toBe(0);
    // Waiting out backpressure must not pile up listeners (node warned).
    expect(r.stderr).toBe("");
    expect(createHash("sha256").update(fs.readFileSync(out)).digest("hex")).toBe(h.digest("hex"));
    fs.rmSync(out);
    fs.rmSync(big);
  }, 180_000);

  it("refuses a tar it cannot apply, and the agent stays up", async () => {
    const dest = path.join(dir, "broken");
    fs.mkdirSync(dest);
    fs.writeFileSync(path.join(dest, "file"), "x");
    // A well-formed tar whose second entry needs a directory where a file is.
    const pack = tar.pack();
    pack.entry({ name: "ok.txt" }, "fine");
    pack.entry({ name: "file/inner" }, Buffer.alloc(1 << 20));
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const send = (input: Buffer) => spawnSync(HOST_BIN, ["--connect", agent.tcp, "cp", "-", `:${dest}`], { input, env: process.env, encoding: "utf8" });
    const w = send(Buffer.concat(chunks));
    expect(w.status).toBe(125);
    expect(w.stderr).toContain("file is not a directory");
    const junk = send(Buffer.alloc(8192, 0x41));
    expect(junk.status).toBe(125);
    expect(junk.stderr).toContain("Invalid tar header");
    expect((await runCli(["--connect", agent.tcp, "ping"])).code).toBe(0);
    expect(agent.proc.exitCode).toBeNull();
  });

  it("names what is missing, and refuses two local paths", async () => {
    const r = await cp(`:${path.join(dir, "nope")}`, path.join(dir, "x"));
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`${path.join(dir, "nope")}: no such file or directory`);
    const two = await cp(path.join(dir, "src"), path.join(dir, "y"));
    expect(two.code).toBe(125);
    expect(two.stderr).toContain("one of SRC and DEST must be CONTAINER:PATH");
  });
});
