// Who may use the API. The server binds to loopback by default, and still
// every request carries the bearer token (made on first start, mode 600,
// printed with the URL), or the session cookie the console page gets by
// opening that URL once (HttpOnly, SameSite=Strict). A page of another
// origin can drive nothing: a state-changing request or a WebSocket upgrade
// whose Origin is not this server's is refused, whatever it carries.
import { randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";

export const COOKIE = "fractal_session";

/** The token in `file`, made (mode 600) if there is none yet. */
export function loadToken(file: string): string {
  try {
    const t = fs.readFileSync(file, "utf8").trim();
    if (t.length >= 32) return t;
  } catch {
    // first start
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const t = randomBytes(32).toString("base64url");
  fs.writeFileSync(file, `${t}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return t;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class ApiAuth {
  /** Sessions handed to the console; a restart of the server ends them. */
  private readonly sessions = new Set<string>();

  constructor(private readonly token: string) {}

  /** A new console session for whoever shows the token (GET /login). */
  login(token: string): string {
    if (!same(token, this.token)) throw new FractalError(ErrorCode.UNAUTHENTICATED, "wrong token");
    const s = randomBytes(32).toString("base64url");
    this.sessions.add(s);
    return s;
  }

  /**
   * Throws unless `req` may be served: a foreign Origin on a state-changing
   * request or an upgrade (PERMISSION_DENIED), then no or a wrong token or
   * session (UNAUTHENTICATED).
   */
  check(req: Request, url: URL, upgrade: boolean): void {
    const origin = req.headers.get("origin");
    const changes = upgrade || !["GET", "HEAD", "OPTIONS"].includes(req.method);
    if (changes && origin !== null && origin !== url.origin) {
      throw new FractalError(ErrorCode.PERMISSION_DENIED, `cross-origin request from ${origin} refused`);
    }
    const auth = req.headers.get("authorization");
    if (auth !== null) {
      const m = /^Bearer\s+(\S+)$/i.exec(auth);
      if (!m || !same(m[1]!, this.token)) throw new FractalError(ErrorCode.UNAUTHENTICATED, "wrong bearer token");
      return;
    }
    const session = cookie(req, COOKIE);
    if (session !== undefined && this.sessions.has(session)) {
      // A browser's upgrade always names its origin: a cookie alone (an upgrade from a tool that does not) is not enough.
      if (upgrade && origin === null) throw new FractalError(ErrorCode.PERMISSION_DENIED, "a WebSocket with the session cookie must come from the console's page");
      return;
    }
    throw new FractalError(ErrorCode.UNAUTHENTICATED, "no credentials: send Authorization: Bearer TOKEN (the token fractal-host serve printed)");
  }
}

function cookie(req: Request, name: string): string | undefined {
  for (const part of (req.headers.get("cookie") ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return undefined;
}
