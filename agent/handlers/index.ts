// Request dispatch: each request decoded once (../commands.ts), checked
// against the key's policy, and served by one exhaustive switch, with
// logging in one place. Handlers are grouped by concern in sibling files.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { RequestHandler, ResponseBody, Session } from "../../proto/session.js";
import type { Request } from "../../proto/wire.js";
import { checkAllowed } from "../auth/policy.js";
import { assertNever, decodeRequest, policyName, type Command } from "../commands.js";
import { log } from "../log.js";
import type { ContainerManager } from "../containers/manager.js";
import type { IdleCollector } from "../idle-gc.js";
import { attestKeys, attestQuote } from "./attest.js";
import { ContainerHandlers } from "./containers.js";
import { CopyHandlers } from "./copy.js";
import { LayerHandlers } from "./layers.js";
import { PortHandlers } from "./ports.js";
import { ProcessHandlers } from "./process.js";
import { ping, shutdown, version } from "./system.js";

/** What every connection's handlers share, made once by main. */
export interface AgentContext {
  /** Containers outlive connections: one manager per agent. */
  containers: ContainerManager;
  /** This agent is a guest's init task (it may power the machine off). */
  isInit: boolean;
  /** Told when requests start and end, to collect the heap once the agent is quiet (idle-gc.ts). */
  idle: IdleCollector;
}

/** Builds the request handler for one connection. */
export function connectionHandler(session: Session, agent: AgentContext): RequestHandler {
  const procs = new ProcessHandlers(session, agent.containers);
  const ctrs = new ContainerHandlers(session, agent.containers);
  const ports = new PortHandlers(session, agent.containers);
  const copies = new CopyHandlers(session, agent.containers);
  const layers = new LayerHandlers(session, agent.containers);
  return async (req: Request) => {
    const cmd = decodeRequest(req);
    checkAllowed(session.principal, policyName(cmd));
    agent.idle.touch();
    try {
      return await serve(cmd, req.id ?? 0);
    } catch (err) {
      if (!(err instanceof FractalError) || err.code === ErrorCode.INTERNAL) {
        log("error", `${cmd.kind} request failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      throw err;
    } finally {
      agent.idle.touch();
    }
  };

  function serve(c: Command, id: number): ResponseBody | Promise<ResponseBody> {
    switch (c.kind) {
      case "ping":
        return ping(c.nonce);
      case "version":
        return version(session.version);
      case "exec":
        return procs.exec(c.exec, id);
      case "signal":
        return procs.signal(c.process, c.signal, c.group);
      case "resize":
        return procs.resize(c.process, c.cols, c.rows);
      case "closeStdin":
        return procs.closeStdin(c.process);
      case "wait":
        return procs.wait(c.execRequest ? procs.startedBy(c.execRequest) : c.process);
      case "shutdown":
        return shutdown(c.reboot, agent.isInit);
      case "images":
        return ctrs.images();
      case "imageUnpack":
        return ctrs.unpack(c.image, c.progressStream);
      case "run":
        return ctrs.run(c.run);
      case "attach":
        return ctrs.attach(c.attach);
      case "containerWait":
        return ctrs.wait(c.container);
      case "containerKill":
        return ctrs.kill(c.container, c.signal);
      case "containerStop":
        return ctrs.stop(c.container, c.timeoutS);
      case "containerRemove":
        return ctrs.remove(c.container, c.force);
      case "containerList":
        return ctrs.list(c.all);
      case "containerResize":
        return ctrs.resize(c.container, c.cols, c.rows);
      case "portForward":
        return ports.forward(c.forward);
      case "copy":
        return copies.copy(c.copy);
      case "layerAdd":
        return layers.add(c.add);
      case "layerRemove":
        return layers.remove(c.container, c.layer);
      case "layerList":
        return layers.list(c.container);
      case "attestKeys":
        return attestKeys();
      case "attestQuote":
        return attestQuote(c.quote);
      default:
        return assertNever(c);
    }
  }
}
