// End-to-end: the compiled agent on loopback, driven through the compiled CLI.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentClient } from "../../host/client.js";
import { ErrorCode } from "../../proto/errors.js";
import { encodeFrame } from "../../proto/frame.js";
import { ROOT, runCli, startAgent, type CliOptions, type RunningAgent } from "../helpers/agent.js";
import { handshake, rawTcp } from "../helpers/raw.js";

let agent: RunningAgent;
beforeAll(async () => {
  agent = await startAgent();
});
afterAll(async () => {
  await agent?.stop();
});

const exec = (args: string[], opts: CliOptions = {}) => runCli(["--connect", agent.tcp, "exec", ...args], opts);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("fractal-host exec", () => {
  it("exits with the remote exit code", async () => {
    const r = await exec(["--", "sh", "-c", "exit 42"]);
    expect(r.code).toBe(42);
  });

  it("reports death by signal as 128+N", async () => {
    const r = await exec(["--", "sh", "-c", "kill -KILL $$"]);
    expect(r.code).toBe(128 + 9);
  });

  it("keeps stdout and stderr separate", async () => {
    const r = await exec(["--", "sh", "-c", "echo to-out; echo to-err >&2"]);
    expect(r.stdout.toString()).toBe("to-out\n");
    expect(r.stderr).toBe("to-err\n");
    expect(r.code).toBe(0);
  });

  it("passes environment, working directory and user", async () => {
    const r = await exec(["-e", "GREETING=hi there", "-w", "/tmp", "-u", "0:0", "--", "sh", "-c", 'echo "$GREETING|$(pwd)|$(id -u):$(id -g)"']);
    expect(r.stdout.toString()).toBe("hi there|/tmp|0:0\n");
  });

  it("propagates stdin EOF so cat finishes", async () => {
    const r = await exec(["-i", "--", "sh", "-c", "cat; echo after-eof"], { input: "abc" });
    expect(r.stdout.toString()).toBe("abcafter-eof\n");
  });

  it("gives the command pipes it can reopen as /dev/stdin, /dev/stdout and /dev/stderr, as ssh does", async () => {
    const r = await exec(["-i", "--", "sh", "-c", "echo out > /dev/stdout; echo err > /dev/stderr; cat /dev/stdin; readlink /proc/self/fd/1"], { input: "in\n" });
    expect(r.stderr).toBe("err\n");
    expect(r.stdout.toString()).toMatch(/^out\nin\npipe:\[\d+\]\n$/);
    expect(r.code).toBe(0);
  });

  it("gives the command's stdout and stderr 1 MiB pipes, so bulk output moves in large reads", async () => {
    // F_GETPIPE_SZ (1032), through Debian's always-installed perl: Linux's
    // default is 64 KiB, which cut a fast writer's output into reads of about 13 KiB.
    const r = await exec(["--", "perl", "-e", "printf qq(%d %d\\n), fcntl(STDOUT, 1032, 0), fcntl(STDERR, 1032, 0)"]);
    expect(r.stderr).toBe("");
    expect(r.stdout.toString()).toBe(`${1 << 20} ${1 << 20}\n`);
  });

  it("round-trips 16 MiB of binary data through cat unchanged", async () => {
    const data = randomBytes(16 << 20);
    const r = await exec(["-i", "--", "cat"], { input: data });
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(data.length);
    expect(sha(r.stdout)).toBe(sha(data));
  });

  it("delivers every byte of output before the exit status, even into a slow pipe", async () => {
    // Repeated: a lost tail (the CLI exiting with output still queued) showed up about once in 60 runs.
    for (let i = 0; i < 10; i++) {
      const r = await exec(["--", "sh", "-c", "head -c 5000000 /dev/zero; printf tail; exit 3"]);
      expect(r.stdout.length).toBe(5_000_004);
      expect(r.stdout.subarray(-4).toString()).toBe("tail");
      expect(r.code).toBe(3);
    }
  });

  it("says 'not found' and exits 127 for a missing command", async () => {
    const r = await exec(["--", "no-such-command-xyz"]);
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/no-such-command-xyz: command not found/);
  });

  it("exits 126 for a file that is not executable", async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "fractal-noexec-")), "data.txt");
    fs.writeFileSync(file, "not a program\n", { mode: 0o644 });
    const r = await exec(["--", file]);
    expect(r.code).toBe(126);
    expect(r.stderr).toMatch(/permission denied/);
  });

  it("names a missing working directory", async () => {
    const r = await exec(["-w", "/no/such/dir", "--", "true"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/working directory \/no\/such\/dir does not exist/);
  });

  it("forwards Ctrl-C (SIGINT) to the remote process group without a tty", async () => {
    const r = await exec(["--", "sh", "-c", "trap 'echo caught; exit 5' INT; echo ready; while :; do sleep 0.1; done"], {
      started: (p) => p.stdout!.once("data", () => p.kill("SIGINT")),
    });
    expect(r.stdout.toString()).toBe("ready\ncaught\n");
    expect(r.code).toBe(5);
  });

  it("forwards SIGTERM and reports the remote death as 143", async () => {
    const r = await exec(["--", "sh", "-c", "echo ready; exec sleep 30"], {
      started: (p) => p.stdout!.once("data", () => p.kill("SIGTERM")),
    });
    expect(r.code).toBe(128 + 15);
  });

  it("runs on a PTY with -t", async () => {
    const r = await exec(["-t", "--", "sh", "-c", "tty; test -t 1 && echo is-a-tty"]);
    expect(r.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r\nis-a-tty\r\n$/);
  });

  it("applies window-size changes from the local terminal, in raw mode, restoring it after", () => {
    const out = execFileSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/pty-cli.ts"), "resize", agent.tcp]);
    const r = JSON.parse(out.toString());
    expect(r.output).toMatch(/30 100/);
    expect(r.output).toMatch(/40 120/);
    expect(r.exitCode).toBe(7);
    expect(r.rawWhileRunning).toBe(true);
    expect(r.restored).toBe(true);
  });

  it("sends Ctrl-C as a byte on a PTY, where it becomes SIGINT", () => {
    const out = execFileSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/pty-cli.ts"), "ctrlc", agent.tcp]);
    const r = JSON.parse(out.toString());
    expect(r.output).toMatch(/got-INT/);
    expect(r.exitCode).toBe(9);
    expect(r.restored).toBe(true);
  });

  it("works over WebSocket and unix sockets too", async () => {
    for (const url of [agent.ws, agent.unix]) {
      const r = await runCli(["--connect", url, "exec", "--", "sh", "-c", "echo via; exit 4"]);
      expect(r.stdout.toString()).toBe("via\n");
      expect(r.code).toBe(4);
    }
  });

  it("prints help for every command", async () => {
    for (const args of [["--help"], ["exec", "--help"], ["ping", "--help"], ["version", "--help"]]) {
      const r = await runCli(args);
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toMatch(/^usage: fractal-host/);
    }
  });

  it("rejects bad flags with a message naming them", async () => {
    const r = await exec(["--bogus", "--", "true"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/unknown flag --bogus/);
    const u = await exec(["-u", "root", "--", "true"]);
    expect(u.stderr).toMatch(/bad --user "root"/);
  });

  it("reports an unreachable agent clearly", async () => {
    const r = await runCli(["--connect", "tcp://127.0.0.1:1", "exec", "--", "true"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/cannot connect to tcp:\/\/127\.0\.0\.1:1/);
  });
});

describe("client library against the agent", () => {
  it("resizes a PTY: stty size sees the new size", async () => {
    const c = await AgentClient.connect(agent.tcp);
    const p = await c.exec({ argv: ["sh", "-c", "stty size; read x; stty size"], tty: { cols: 80, rows: 24 }, stdin: true });
    let out = "";
    p.onStdout((b) => void (out += Buffer.from(b).toString()));
    while (!out.includes("24 80")) await new Promise((r) => setTimeout(r, 10));
    await p.resize(132, 50);
    await p.write(Buffer.from("\n"));
    expect(await p.wait()).toEqual({ kind: "exited", code: 0 });
    expect(out).toMatch(/50 132/);
    c.close();
  });

  it.each([
    ["waited for once started", false],
    ["waited for in the same write", true],
  ])("runs 50 concurrent execs on one connection, each with its own output and status (%s)", async (_, waitAhead) => {
    const c = await AgentClient.connect(agent.tcp);
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const p = await c.exec({ argv: ["sh", "-c", `echo job-${i}; exit ${i % 7}`], waitAhead });
        let out = "";
        p.onStdout((b) => void (out += Buffer.from(b).toString()));
        const st = await p.wait();
        return { out, st, i };
      }),
    );
    for (const r of results) {
      expect(r.out).toBe(`job-${r.i}\n`);
      expect(r.st).toEqual({ kind: "exited", code: r.i % 7 });
    }
    // A failed exec fails alone: a wait sent with it leaves nothing behind.
    await expect(c.exec({ argv: ["no-such-command-here"], waitAhead })).rejects.toMatchObject({ code: ErrorCode.COMMAND_NOT_FOUND });
    expect(await c.ping()).toBeLessThan(1000);
    c.close();
  });

  it("answers ping within 50 ms while another stream on the connection is blocked", async () => {
    const c = await AgentClient.connect(agent.tcp);
    const p = await c.exec({ argv: ["head", "-c", "100000000", "/dev/zero"] });
    let got = 0;
    p.onStdout((b) => {
      got += b.length;
      return new Promise(() => {}); // this reader never finishes consuming
    });
    while (got === 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    const rtts = [];
    for (let i = 0; i < 5; i++) rtts.push(await c.ping());
    expect(Math.max(...rtts)).toBeLessThan(50);
    expect(got).toBeLessThan(100_000_000); // it really is stalled by flow control
    await p.signal(9);
    c.close();
  });

  it("answers a wait sent in the same write as its exec, naming the exec's request, and only once", async () => {
    const r = await rawTcp(agent.tcp);
    await handshake(r);
    // One write: the exec (stdout on stream 1) and the wait that names it.
    r.send(Buffer.concat([
      encodeFrame({ request: { id: 1, exec: { argv: ["sh", "-c", "echo early; exit 7"], stdoutStream: 1 } } }),
      encodeFrame({ request: { id: 2, wait: { execRequest: 1 } } }),
    ]));
    expect((await r.next((f) => f.response?.id === 1)).response!.exec!.process).toBeGreaterThan(0);
    expect((await r.next((f) => f.response?.id === 2)).response!.exit).toEqual({ code: 7 });
    expect(Buffer.from((await r.next((f) => f.data?.stream === 1)).data!.payload!).toString()).toBe("early\n");
    // Answered once: the request no longer names a process; one that started nothing never did.
    r.sendFrame({ request: { id: 3, wait: { execRequest: 1 } } });
    r.sendFrame({ request: { id: 4, wait: { execRequest: 3 } } });
    for (const [id, named] of [[3, 1], [4, 3]]) {
      expect((await r.next((f) => f.response?.id === id)).response!.error).toMatchObject({
        code: ErrorCode.NO_SUCH_PROCESS,
        message: expect.stringMatching(new RegExp(`request ${named} started no process`)),
      });
    }
    r.socket.destroy();
  });

  it("signals only a process that is still running", async () => {
    const c = await AgentClient.connect(agent.tcp);
    const p = await c.exec({ argv: ["true"] });
    await p.wait();
    await expect(p.signal(15)).rejects.toMatchObject({ message: expect.stringMatching(/no process with handle|has exited/) });
    c.close();
  });
});
