// The web console's files, compiled into fractal-host (host/api/gen, made
// by `make proto` from host/console).
import { consoleFiles } from "./gen/console.js";

export function consoleAsset(pathname: string): Response | undefined {
  const f = consoleFiles[pathname === "/index.html" ? "/" : pathname];
  if (!f) return undefined;
  return new Response(f.body, { headers: { "content-type": f.type, "cache-control": "no-cache", "x-content-type-options": "nosniff", "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'" } });
}
