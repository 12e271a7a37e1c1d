// Text that arrives in chunks, handed on a line at a time (JSON-lines
// protocols: QMP, the container shim; progress streams). A chunk may end
// mid-line; the rest waits for the next one.

/** Returns a function to feed chunks to; `onLine` gets each complete line, without its newline. */
export function lineSplitter(onLine: (line: string) => void): (chunk: string) => void {
  let buf = "";
  return (chunk) => {
    buf += chunk;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  };
}
