// System handlers: liveness and build facts.
import os from "node:os";
import type { ResponseBody } from "../../proto/session.js";
import { AGENT_VERSION } from "../version.js";

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
    },
  };
}
