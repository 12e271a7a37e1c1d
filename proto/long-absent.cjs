// What the bundles get for `require("long")` (tsconfig.bundle.json maps it
// here). fractal.proto has no 64-bit integers, so protobufjs never needs
// long.js, but it requires it if it can; in a compiled binary it can, and
// evaluating long.js (which compiles a WebAssembly module) cost every start
// of the CLI and the agent. protobufjs takes a null export as "no Long".
module.exports = null;
