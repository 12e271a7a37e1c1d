// One guest serves a whole test file, so a test that fails can leave the rest
// failing after it: its console (the agent's log, the kernel's) says why, and
// `vm stop` removes it with the VM's directory. Call in the file's top level;
// print the result of the returned function in afterAll, before `vm stop`.
import path from "node:path";
import { afterEach } from "vitest";
import { consoleTail } from "../../host/vm/manager.js";

export function consoleOnFailure(state: string, name: string, lines = 80): () => void {
  let failed = false;
  afterEach(({ task }) => {
    if (task.result?.state === "fail") failed = true;
  });
  return () => {
    if (failed) console.error(`${name}'s console, its last ${lines} lines:\n${consoleTail(path.join(state, name, "console.log"), lines)}`);
  };
}
