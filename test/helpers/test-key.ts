// Every test process authenticates with one key made for the run, never the
// user's own: FRACTAL_KEY points the CLI, the client library and `boot` at it.
import fs from "node:fs";
import path from "node:path";
import { writeNewKey } from "../../host/keygen.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
export const TEST_KEY = path.join(ROOT, "build/test-key/key");

if (!process.env.FRACTAL_KEY) {
  if (!fs.existsSync(`${TEST_KEY}.pub`)) {
    try {
      writeNewKey(TEST_KEY, "fractal-tests");
    } catch {
      // another test process made it first
    }
  }
  process.env.FRACTAL_KEY = TEST_KEY;
}
