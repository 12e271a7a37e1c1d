// A host serial port (serial:///dev/ttyUSB0?baud=RATE): raw at that rate while
// fractal holds it, as it was afterwards. Checked on a real pseudo-terminal
// pair through stty, the tool a user would check the line with.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseEndpoint, formatEndpoint } from "../../proto/endpoint.js";

const ROOT = path.resolve(__dirname, "../..");

function onPty(baud?: string): { before: string; during: string; after: string; error: string } {
  const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/serial-termios.ts"), ...(baud ? [baud] : [])], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`helper failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

describe("host serial lines", () => {
  it("reads the line rate from the URL and refuses one a port cannot take, naming it", () => {
    expect(parseEndpoint("serial:///dev/ttyUSB0?baud=115200")).toEqual({ kind: "serial", path: "/dev/ttyUSB0", baud: 115200 });
    expect(formatEndpoint(parseEndpoint("serial:///dev/ttyUSB0?baud=9600"))).toBe("serial:///dev/ttyUSB0?baud=9600");
    expect(parseEndpoint("serial:///dev/ttyS1")).toEqual({ kind: "serial", path: "/dev/ttyS1" });
    expect(() => parseEndpoint("serial:///dev/ttyUSB0?baud=12345")).toThrow(/12345 is not a line rate/);
    expect(() => parseEndpoint("serial:///dev/ttyUSB0?speed=9600")).toThrow(/unknown option "speed=9600"/);
  });

  it("puts the line in raw mode at the rate asked for, and restores its settings on close", () => {
    const r = onPty("115200");
    expect(r.error).toBe("");
    expect(r.before).toMatch(/ icanon /);
    expect(r.during).toMatch(/speed 115200 baud/);
    // raw: no line editing, no echo, no CR/NL translation; 8 bits, modem lines ignored
    expect(r.during).toMatch(/-icanon/);
    expect(r.during).toMatch(/-echo /);
    expect(r.during).toMatch(/-icrnl/);
    expect(r.during).toMatch(/ cs8/);
    expect(r.during).toMatch(/ clocal/);
    expect(r.during).toMatch(/-crtscts/);
    expect(r.after).toBe(r.before);
  });

  it("sets other rates too", () => {
    const r = onPty("9600");
    expect(r.during).toMatch(/speed 9600 baud/);
    expect(r.after).toBe(r.before);
  });
});
