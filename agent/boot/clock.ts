// Imported first by main.ts, so its body runs before any other module of the
// agent is evaluated: it marks when Bun's runtime handed over to our code.
// With performance.now() counting from the runtime's own start, the boot log
// can then split "exec to ready" into the runtime's start, the evaluation of
// the agent's modules, and the init work after (bench-boot reports them).
const firstCodeMs = performance.now();

/**
 * Guest uptimes, in seconds, of the runtime's start and of the first agent
 * code, derived from `uptimeS` read now.
 */
export function startStages(uptimeS: number): { runtime: number; code: number } {
  const now = performance.now();
  return { runtime: uptimeS - now / 1000, code: uptimeS - (now - firstCodeMs) / 1000 };
}
