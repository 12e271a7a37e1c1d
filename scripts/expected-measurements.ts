// Writes the expected measurements of a kernel and initramfs (what make
// build built) for attestation: bun scripts/expected-measurements.ts KERNEL INITRD OUT
import fs from "node:fs";
import path from "node:path";
import { measureArtifacts } from "../host/attest/expected.js";

const [kernel, initrd, out] = process.argv.slice(2);
if (!kernel || !initrd || !out) {
  process.stderr.write("usage: expected-measurements.ts KERNEL INITRD OUT\n");
  process.exit(2);
}
fs.writeFileSync(`${out}.tmp`, `${JSON.stringify(measureArtifacts(kernel, initrd, path.dirname(path.resolve(out))), null, 2)}\n`);
fs.renameSync(`${out}.tmp`, out);
