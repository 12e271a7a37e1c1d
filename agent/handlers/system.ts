// System handlers: liveness and build facts.
import os from "node:os";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { log } from "../log.js";
import type { ResponseBody } from "../../proto/session.js";
import { AGENT_VERSION } from "../version.js";
import { networkReady } from "../boot/network-state.js";

const started = Date.now();

export function ping(nonce: number): ResponseBody {
  return { ping: { nonce, uptimeMs: Date.now() - started } };
}

export function version(protocolVersion: number): ResponseBody {
  return {
    version: {
      agentVersion: AGENT_VERSION,
      protocolVersion,
      runtime: typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process.version}`,
      kernel: os.release(),
      hostname: os.hostname(),
      arch: process.arch,
      networkReady: networkReady(),
    },
  };
}

/**
 * Answers first, then powers off: the reply must reach the host before the
 * machine goes. Only the guest's init task may do this; an agent on a
 * developer's host refuses rather than shutting the host down.
 */
export function shutdown(reboot: boolean, isInit: boolean): ResponseBody {
  if (!isInit) throw new FractalError(ErrorCode.PERMISSION_DENIED, "shutdown: this agent is not a guest's init task (start it with --init)");
  setTimeout(async () => {
    const { powerOff } = await import("../../proto/libc.js");
    log("info", `shutdown: ${reboot ? "rebooting" : "powering off"}`);
    try {
      powerOff(reboot);
    } catch (err) {
      log("error", `shutdown failed: ${(err as Error).message}`);
    }
  }, 100);
  return { ok: {} };
}
