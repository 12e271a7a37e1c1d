// The CLI's surface: every command the help lists exists and explains
// itself; no command guesses what its argument names; fractal's own
// failures exit 125 and only a missing or unrunnable command 127/126.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSignal } from "../../proto/signals.js";
import { AGENT_BIN, runCli, startAgent, type RunningAgent } from "../helpers/agent.js";

let agent: RunningAgent;
const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-cli-test-"));
beforeAll(async () => {
  agent = await startAgent();
});
afterAll(async () => {
  await agent?.stop();
  fs.rmSync(state, { recursive: true, force: true });
});

/** The command words listed under the headings of a help text's command list. */
function listed(help: string, prefix = ""): string[] {
  return [...help.matchAll(new RegExp(`^  ${prefix}([a-z][a-z-]*)\\s{2,}\\S`, "gm"))].map((m) => m[1]!);
}

describe("help", () => {
  it("lists commands that all exist and each answer --help with their usage", async () => {
    const top = await runCli(["--help"]);
    expect(top.code).toBe(0);
    const names = listed(top.stdout.toString().split("\nCommands")[0]!.split("-h, --help")[1]!);
    expect(names).toEqual(expect.arrayContaining(["boot", "ls", "vm", "exec", "run", "ps", "logs", "attach", "stop", "kill", "rm", "wait", "images", "image", "ping", "version", "keygen", "shell"]));
    for (const name of names) {
      const r = await runCli([name, "--help"]);
      expect([name, r.code, r.stderr]).toEqual([name, 0, ""]);
      expect(r.stdout.toString()).toMatch(new RegExp(`^usage: fractal-host (\\[[^\\]]*\\] )*${name}\\b`));
    }
    const vm = (await runCli(["vm", "--help"])).stdout.toString();
    const subs = listed(vm, "vm ");
    expect(subs).toEqual(["boot", "ls", "stop"]);
    for (const sub of subs) {
      const r = await runCli(["vm", sub, "--help"]);
      expect([sub, r.code]).toEqual([sub, 0]);
      expect(r.stdout.toString()).toMatch(/^usage: fractal-host /);
    }
  });

  it("refuses an unknown command or flag with 125, naming it", async () => {
    const r = await runCli(["stop-container", "x"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/unknown command "stop-container"/);
    const f = await runCli(["ps", "--no-such-flag"]);
    expect(f.code).toBe(125);
    expect(f.stderr).toMatch(/unknown flag --no-such-flag/);
  });
});

describe("stop", () => {
  it("stops containers only, in the agent given by $FRACTAL_CONNECT, and never powers off a VM it was not asked to", async () => {
    const env = { FRACTAL_STATE: state };
    // Without an agent it explains, instead of guessing that NAME is a VM.
    const none = await runCli(["stop", "dev"], { env: { ...env, FRACTAL_CONNECT: "" } });
    expect(none.code).toBe(125);
    expect(none.stderr).toMatch(/no agent given.*to power a VM off, use `fractal-host vm stop NAME`/);
    const viaEnv = await runCli(["stop", "dev"], { env: { ...env, FRACTAL_CONNECT: agent.tcp } });
    expect(viaEnv.code).toBe(125);
    expect(viaEnv.stderr).toMatch(/no such container: dev/);
    const vm = await runCli(["vm", "stop", "dev"], { env });
    expect(vm.code).toBe(125);
    expect(vm.stderr).toMatch(/no VM named dev/);
  });
});

describe("signals", () => {
  it("takes every Linux signal by name or number, whatever the host numbers them", () => {
    expect(parseSignal("usr1")).toBe(10);
    expect(parseSignal("SIGUSR2")).toBe(12);
    expect(parseSignal("QUIT")).toBe(3);
    expect(parseSignal("PWR")).toBe(30);
    expect(parseSignal("9")).toBe(9);
    expect(parseSignal("64")).toBe(64);
    expect(parseSignal("RTMIN")).toBe(34);
    expect(parseSignal("sigrtmin+3")).toBe(37);
    expect(parseSignal("RTMAX-1")).toBe(63);
    for (const bad of ["0", "65", "FOO", "RTMIN+40", ""]) expect(() => parseSignal(bad)).toThrow(/unknown signal/);
  });

  it("ends an agent started as a daemon cleanly on SIGTERM, as sshd does", async () => {
    const a = await startAgent();
    const exited = new Promise<number | null>((r) => a.proc.once("exit", (code) => r(code)));
    a.proc.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(a.log()).toMatch(/SIGTERM: exiting/);
    fs.rmSync(a.dir, { recursive: true, force: true });
  });

  it("refuses to start an agent whose address is taken or cannot be made, naming the address and why", () => {
    const taken = spawnSync(AGENT_BIN, ["--listen", agent.tcp, "--auth", "none"], { encoding: "utf8", timeout: 30_000 });
    expect(taken.status).toBe(125);
    expect(taken.stderr).toContain(`cannot listen on ${agent.tcp}: listen EADDRINUSE: address already in use`);
    const sock = `unix://${path.join(state, "no-such-dir", "agent.sock")}`;
    const missing = spawnSync(AGENT_BIN, ["--listen", sock, "--auth", "none"], { encoding: "utf8", timeout: 30_000 });
    expect(missing.status).toBe(125);
    expect(missing.stderr).toContain(`cannot listen on ${sock}: listen ENOENT: no such file or directory`);
  });

  it("forwards USR1 and QUIT sent to exec to the remote process", async () => {
    const script = "trap 'echo got-USR1' USR1; trap 'echo got-QUIT; exit 3' QUIT; echo ready; while :; do sleep 0.1; done";
    let out = "";
    const sent: string[] = [];
    const r = await runCli(["--connect", agent.tcp, "exec", "--", "sh", "-c", script], {
      started: (p) => {
        p.stdout!.on("data", (b: Buffer) => {
          out += b.toString();
          if (out.includes("ready") && sent.length === 0) {
            sent.push("USR1");
            p.kill("SIGUSR1");
          }
          if (out.includes("got-USR1") && sent.length === 1) {
            sent.push("QUIT");
            p.kill("SIGQUIT");
          }
        });
      },
    });
    expect(r.stdout.toString()).toBe("ready\ngot-USR1\ngot-QUIT\n");
    expect(r.code).toBe(3);
  });
});
