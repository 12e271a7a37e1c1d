// Agent log: one line per event on stderr (the console when the agent is the
// guest's init task). Kept tiny on purpose; later issues add a file sink.
export type Level = "info" | "warn" | "error";

let sinks: ((line: string) => void)[] = [(line) => process.stderr.write(line)];

export function addLogSink(sink: (line: string) => void): void {
  sinks.push(sink);
}

export function log(level: Level, msg: string): void {
  const line = `${new Date().toISOString()} fractal-agent ${level}: ${msg}\n`;
  for (const s of sinks) {
    try {
      s(line);
    } catch {
      // A broken log sink must never take the agent down.
    }
  }
}

