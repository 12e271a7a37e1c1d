// A client that sends its wait with the exec (ExecOptions.waitAhead) against
// an agent from before WaitRequest.exec_request: that agent reads the wait as
// one for handle 0, refuses it, and the client waits by handle instead.
import { describe, expect, it } from "vitest";
import { AgentClient } from "../../host/client.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { Session, type RequestHandler } from "../../proto/session.js";
import { memoryLinkPair } from "../helpers/memory-link.js";

describe("exec with its wait sent ahead", () => {
  it("falls back to waiting by handle on an agent that knows no exec_request", async () => {
    const [a, b] = memoryLinkPair();
    const waits: number[] = [];
    let server!: Session;
    // The old agent: handles only, and process 0 is never one.
    const old: RequestHandler = async (req) => {
      if (req.exec) {
        const out = server.openOut(req.exec.stdoutStream!);
        await out.write(Buffer.from("hi\n"));
        out.end();
        server.openOut(req.exec.stderrStream!).end();
        return { exec: { process: 9, pid: 1234 } };
      }
      if (req.wait) {
        waits.push(req.wait.process ?? 0);
        if (req.wait.process !== 9) throw new FractalError(ErrorCode.NO_SUCH_PROCESS, `no process with handle ${req.wait.process ?? 0}`);
        return { exit: { code: 3 } };
      }
      throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, "not served here");
    };
    server = Session.accept(b, { onRequest: old });
    const c = await AgentClient.over(a);
    const p = await c.exec({ argv: ["x"], waitAhead: true });
    let out = "";
    p.onStdout((chunk) => void (out += Buffer.from(chunk).toString()));
    expect(await p.wait()).toEqual({ kind: "exited", code: 3 });
    expect(out).toBe("hi\n");
    expect(waits).toEqual([0, 9]);
    c.close();
  });
});
