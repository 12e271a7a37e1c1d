import { defineConfig } from "vitest/config";

// Unit tests run in-process under Node; integration tests spawn the compiled
// agent and CLI from build/, so they need `make build` first (make test does it).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    setupFiles: ["test/helpers/test-key.ts"],
  },
});
