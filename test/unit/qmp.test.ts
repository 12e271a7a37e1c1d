// The QMP client against fake QEMUs on a unix socket: one that answers, one
// whose main loop is stuck (greets, never answers), one that exits.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Qmp, qemuExited } from "../../host/vm/qmp.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-qmp-"));
const servers: net.Server[] = [];

function fakeQemu(answer: boolean): Promise<string> {
  const sock = path.join(dir, `qmp-${servers.length}.sock`);
  const server = net.createServer((c) => {
    c.on("error", () => {});
    c.write(`${JSON.stringify({ QMP: { version: {}, capabilities: [] } })}\n`);
    c.on("data", (b) => {
      if (!answer) return;
      for (const line of b.toString().split("\n").filter(Boolean)) {
        const { execute } = JSON.parse(line) as { execute: string };
        c.write(`${JSON.stringify({ event: "NOISE" })}\n`);
        c.write(`${JSON.stringify(execute === "bad" ? { error: { class: "GenericError", desc: "no such command" } } : { return: {} })}\n`);
      }
    });
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(sock, () => resolve(sock)));
}

afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

describe("QMP client", () => {
  it("negotiates and runs commands, skipping events, and names a command's error", async () => {
    const q = await Qmp.connect(await fakeQemu(true), 2000);
    await expect(q.execute("query-status")).resolves.toEqual({});
    await expect(q.execute("bad")).rejects.toThrow(/QMP bad: no such command/);
    q.close();
  });

  it("gives up on a QEMU that greets but never answers, instead of hanging", async () => {
    const t0 = Date.now();
    await expect(Qmp.connect(await fakeQemu(false), 300)).rejects.toThrow(/qmp_capabilities: no answer within 300 ms/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it("tells a QEMU that exited from one still running", async () => {
    const sock = await fakeQemu(true);
    expect(await qemuExited(sock, 200)).toBe(false);
    expect(await qemuExited(path.join(dir, "nothing.sock"), 200)).toBe(true);
  });
});
