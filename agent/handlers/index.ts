// Request dispatch: one switch over every request kind, with logging and
// error mapping in one place. Handlers are grouped by concern in sibling files.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { RequestHandler, Session } from "../../proto/session.js";
import type { Request } from "../../proto/wire.js";
import { checkAllowed, requestType } from "../auth/policy.js";
import { log } from "../log.js";
import type { ContainerManager } from "../containers/manager.js";
import { ContainerHandlers } from "./containers.js";
import { ProcessHandlers } from "./process.js";
import { ping, shutdown, version } from "./system.js";

/** What every connection's handlers share, made once by main. */
export interface AgentContext {
  /** Containers outlive connections: one manager per agent. */
  containers: ContainerManager;
  /** This agent is a guest's init task (it may power the machine off). */
  isInit: boolean;
}

type RequestKind = NonNullable<Request["body"]>;

function assertNever(x: never): never {
  throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, `unknown request type ${String(x)}`);
}

/** Builds the request handler for one connection. */
export function connectionHandler(session: Session, agent: AgentContext): RequestHandler {
  const procs = new ProcessHandlers(session, agent.containers);
  const ctrs = new ContainerHandlers(session, agent.containers);
  return async (req: Request) => {
    // protobufjs sets `body` to the name of the oneof field present; an
    // unknown field number (a newer client) leaves it undefined.
    const kind = (req as { body?: RequestKind }).body;
    if (kind === undefined) throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, "unknown request type (a newer client?)");
    checkAllowed(session.principal, requestType(req, kind));
    try {
      switch (kind) {
        case "ping":
          return ping(req.ping!.nonce ?? 0);
        case "version":
          return version(session.version);
        case "exec":
          return procs.exec(req.exec!);
        case "signal":
          return procs.signal(req.signal!.process ?? 0, req.signal!.signal ?? 0, req.signal!.group ?? false);
        case "resize":
          return procs.resize(req.resize!.process ?? 0, req.resize!.cols ?? 0, req.resize!.rows ?? 0);
        case "closeStdin":
          return procs.closeStdin(req.closeStdin!.process ?? 0);
        case "wait":
          return await procs.wait(req.wait!.process ?? 0);
        case "shutdown":
          return shutdown(req.shutdown!.reboot ?? false, agent.isInit);
        case "images":
          return ctrs.images();
        case "run":
          return await ctrs.run(req.run!);
        case "containerWait":
          return await ctrs.wait(req.containerWait!.container ?? "");
        case "attach":
          return ctrs.attach(req.attach!);
        case "containerKill":
          return await ctrs.kill(req.containerKill!.container ?? "", req.containerKill!.signal ?? 0);
        case "containerStop":
          return await ctrs.stop(req.containerStop!.container ?? "", req.containerStop!.timeoutS ?? 0);
        case "containerRemove":
          return await ctrs.remove(req.containerRemove!.container ?? "", req.containerRemove!.force ?? false);
        case "containerList":
          return ctrs.list(req.containerList!.all ?? false);
        case "imageUnpack":
          return await ctrs.unpack(req.imageUnpack!.image ?? "", req.imageUnpack!.progressStream ?? 0);
        case "containerResize":
          return ctrs.resize(req.containerResize!.container ?? "", req.containerResize!.cols ?? 0, req.containerResize!.rows ?? 0);
        default:
          return assertNever(kind);
      }
    } catch (err) {
      if (!(err instanceof FractalError) || err.code === ErrorCode.INTERNAL) {
        log("error", `${kind} request failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      throw err;
    }
  };
}
