// The baseline of the CLI's start in bench-exec: a Bun hello-world, compiled as fractal-host is.
console.log("hello");
