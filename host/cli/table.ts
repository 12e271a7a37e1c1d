// Column output as docker and ls print it: each column as wide as its widest
// cell plus a gap, the last one unpadded.
export function table(rows: string[][], gap: number): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + gap))).join("").trimEnd() + "\n").join("");
}

/** A time as the listings print it: UTC, to the second. */
export function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}
