// FRACTAL_TIMING=1: the CLI prints, on exit, how long each stage of its run
// took (process start to main, connect, handshake and key, request to
// spawn, spawn to exit, exit to the CLI's exit), for bench-peers' breakdown
// and for anyone asking where a slow exec spends its time.
const on = !!process.env.FRACTAL_TIMING;
const marks: [string, number][] = [];

/** Marks the end of a stage; performance.now() counts from the process's start. */
export function mark(stage: string): void {
  if (on) marks.push([stage, performance.now()]);
}

/** The stages as one line on stderr ("stage=ms ..."), when asked for. */
export function report(): void {
  if (!on || marks.length === 0) return;
  let last = 0;
  const parts = marks.map(([stage, t]) => {
    const d = t - last;
    last = t;
    return `${stage}=${d.toFixed(2)}`;
  });
  console.error(`fractal-host timing (ms): ${parts.join(" ")} total=${last.toFixed(2)}`);
}
