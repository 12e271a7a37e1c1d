// Agent log: one line per event on stderr (the console when the agent is the
// guest's init task) and on any sink added (the guest's log file).
export type Level = "debug" | "info" | "warn" | "error";

const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

interface Sink {
  write: (line: string) => void;
  min: Level;
}

const stderrSink: Sink = { write: (line) => process.stderr.write(line), min: "debug" };
const sinks: Sink[] = [stderrSink];

/** Another place for log lines, of `min` and above. */
export function addLogSink(write: (line: string) => void, min: Level = "debug"): void {
  sinks.push({ write, min });
}

/** What still reaches stderr once another sink keeps the rest. */
export function setStderrLevel(min: Level): void {
  stderrSink.min = min;
}

export function log(level: Level, msg: string): void {
  const line = `${new Date().toISOString()} fractal-agent ${level}: ${msg}\n`;
  for (const s of sinks) {
    if (RANK[level] < RANK[s.min]) continue;
    try {
      s.write(line);
    } catch {
      // A broken log sink must never take the agent down.
    }
  }
}
