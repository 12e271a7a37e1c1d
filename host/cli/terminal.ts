// Local terminal handling for interactive commands: raw mode that is undone
// on every exit path, window size, and output that respects backpressure.

/** Puts stdin in raw mode if it is a TTY; returns the function that restores it (idempotent). */
export function enterRawMode(): () => void {
  const stdin = process.stdin;
  if (!stdin.isTTY) return () => {};
  stdin.setRawMode(true);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    try {
      stdin.setRawMode(false);
    } catch {
      // the terminal is gone (hang-up): nothing left to restore
    }
  };
  // process.exit() skips finally blocks; the 'exit' hook does not.
  process.once("exit", restore);
  return restore;
}

export function windowSize(): { cols: number; rows: number } {
  const out = process.stdout;
  if (out.isTTY && out.columns && out.rows) return { cols: out.columns, rows: out.rows };
  return { cols: Number(process.env.COLUMNS) || 80, rows: Number(process.env.LINES) || 24 };
}

/**
 * A writer for fd 1 or 2 whose write() resolves once the bytes reached the
 * file descriptor, so the agent is paced by whoever reads our output. Bun's
 * process.stdout acknowledges writes it still buffers, and process.exit()
 * then drops them, so output goes through a FileSink; and since flush() was
 * seen to resolve with bytes still queued on a full pipe, close() ends the
 * sink (which drains it) before the CLI may exit.
 */
export function fdWriter(fd: 1 | 2): { write: (chunk: Uint8Array) => Promise<void>; close: () => Promise<void> } {
  const sink = (fd === 1 ? Bun.stdout : Bun.stderr).writer();
  return {
    write: async (chunk) => {
      sink.write(chunk);
      await sink.flush();
    },
    close: async () => {
      await sink.end();
    },
  };
}
