// fractal-agent: parses flags and serves. As a guest's init task it must never
// exit on an error, so failures are logged and serving goes on.
import { parseArgs } from "node:util";
import { exitStatusFor } from "../proto/errors.js";
import { log } from "./log.js";
import { serve } from "./server.js";
import { AGENT_VERSION } from "./version.js";

const usage = `usage: fractal-agent --listen URL [--listen URL]...

Serves the fractal protocol on every URL given:
  tcp://HOST:PORT      TCP (e.g. tcp://127.0.0.1:5000)
  unix:///PATH         unix-domain socket
  ws://HOST:PORT[/P]   WebSocket

  --listen URL   a listener (repeatable)
  --version      print the version and exit
  --help         this text
`;

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        listen: { type: "string", multiple: true, default: [] },
        version: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`fractal-agent: ${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) return void process.stdout.write(usage);
  if (values.version) return void process.stdout.write(`fractal-agent ${AGENT_VERSION}\n`);
  if (values.listen.length === 0) {
    process.stderr.write(`fractal-agent: at least one --listen URL is needed\n${usage}`);
    process.exit(2);
  }
  process.on("uncaughtException", (err) => log("error", `uncaught: ${err.stack ?? err.message}`));
  process.on("unhandledRejection", (err) => log("error", `unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));
  // Losing a client mid-write must not kill the agent.
  process.on("SIGPIPE", () => {});
  try {
    await serve({ listen: values.listen });
  } catch (err) {
    process.stderr.write(`fractal-agent: ${(err as Error).message}\n`);
    process.exit(exitStatusFor(err));
  }
}

void main();
