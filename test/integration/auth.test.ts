// Authentication and per-key policy on the compiled agent: network listeners
// (TCP, WebSocket, TLS, WSS) demand a known Ed25519 key, replays and guesses
// fail, failures are rate-limited and logged, and an observer key can look
// but not touch.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ticketMessage } from "../../proto/auth.js";
import { ErrorCode } from "../../proto/errors.js";
import { runCli, startAgent, type RunningAgent } from "../helpers/agent.js";
import { frameRelay, handshake, rawTcp, testSigner } from "../helpers/raw.js";

let agent: RunningAgent;
let keys: string;
const pub = (f: string) => fs.readFileSync(`${f}.pub`, "utf8").trim();

beforeAll(async () => {
  keys = fs.mkdtempSync("/tmp/fractal-auth-keys-");
  for (const k of ["observer", "stranger", "locked"]) await runCli(["keygen", "-f", path.join(keys, k)]);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-keyout", path.join(keys, "tls.key"), "-out", path.join(keys, "tls.crt"),
  ], { stdio: "ignore" });
  agent = await startAgent({
    authorizedKeys: [pub(process.env.FRACTAL_KEY!), `allow=observer ${pub(path.join(keys, "observer"))}`],
    args: ["--listen", "tls://127.0.0.1:0", "--listen", "wss://127.0.0.1:0", "--tls-cert", path.join(keys, "tls.crt"), "--tls-key", path.join(keys, "tls.key")],
    listeners: 5,
  });
});
afterAll(async () => {
  await agent?.stop();
  fs.rmSync(keys, { recursive: true, force: true });
});

const url = (scheme: string) => agent.urls.find((u) => u.startsWith(`${scheme}://`))!;
const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { env: { FRACTAL_TLS_CA: path.join(keys, "tls.crt"), ...env } });

describe("authentication", () => {
  it("serves a known key over TCP, WebSocket, TLS and WSS", async () => {
    for (const scheme of ["tcp", "ws", "tls", "wss"]) {
      const r = await cli(["--connect", url(scheme), "exec", "--", "echo", `over ${scheme}`]);
      expect(r.stderr).toBe("");
      expect(r.stdout.toString()).toBe(`over ${scheme}\n`);
      expect(r.code).toBe(0);
    }
  });

  it("refuses a connection without a key, naming what to do, on every network listener", async () => {
    for (const scheme of ["tcp", "ws", "tls", "wss"]) {
      const r = await cli(["--connect", url(scheme), "ping"], { FRACTAL_KEY: "", XDG_CONFIG_HOME: keys });
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/requires a key and none was given.*fractal-host keygen/);
    }
  });

  it("lets unix sockets in without a key (a host-only channel)", async () => {
    const r = await cli(["--connect", agent.unix, "exec", "--", "echo", "local"], { FRACTAL_KEY: "", XDG_CONFIG_HOME: keys });
    expect(r.stdout.toString()).toBe("local\n");
    expect(r.code).toBe(0);
  });

  it("refuses a key it does not know, and logs it", async () => {
    const r = await cli(["--connect", agent.tcp, "--key", path.join(keys, "stranger"), "exec", "--", "true"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/refused authentication: key SHA256:\S+ is not authorised/);
    expect(agent.log()).toMatch(/authentication failed: key SHA256:\S+ is not authorised/);
  });

  it("refuses TLS to a client that does not trust the agent's certificate", async () => {
    const r = await runCli(["--connect", url("tls"), "ping"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/cannot connect to tls:\/\/127\.0\.0\.1:\d+: self.signed certificate/);
  });

  it("gives each connection a fresh challenge, so a recorded answer does not open another", async () => {
    const key = await testSigner();
    const first = await rawTcp(agent.tcp);
    first.sendFrame({ hello: { minVersion: 1, maxVersion: 1 } });
    const c1 = (await first.next((f) => !!f.helloAck)).helloAck!.authChallenge!;
    const recorded = { publicKey: key.publicKey, signature: await key.sign(c1) };
    first.sendFrame({ auth: recorded });
    await first.next((f) => !!f.authOk);

    const replay = await rawTcp(agent.tcp);
    replay.sendFrame({ hello: { minVersion: 1, maxVersion: 1 } });
    const c2 = (await replay.next((f) => !!f.helloAck)).helloAck!.authChallenge!;
    expect(c2.length).toBe(32);
    expect(Buffer.from(c2).equals(Buffer.from(c1))).toBe(false);
    replay.sendFrame({ auth: recorded });
    const e = (await replay.next((f) => !!f.protocolError)).protocolError!;
    expect(e.code).toBe(ErrorCode.UNAUTHENTICATED);
    expect(e.message).toMatch(/bad signature/);
    await replay.closed;
  });

  it("hangs up on a client that says Hello and never proves a key", async () => {
    const r = await rawTcp(agent.tcp);
    r.sendFrame({ hello: { minVersion: 1, maxVersion: 1 } });
    await r.next((f) => !!f.helloAck);
    const t0 = Date.now();
    const e = (await r.next((f) => !!f.protocolError)).protocolError!;
    expect(e.code).toBe(ErrorCode.UNAUTHENTICATED);
    expect(e.message).toMatch(/no Auth within the handshake timeout/);
    await r.closed;
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 30_000);

  it("serves nothing before Auth: a request first ends the connection and runs nothing", async () => {
    const marker = path.join(keys, "must-not-exist");
    const r = await rawTcp(agent.tcp);
    r.sendFrame({ hello: { minVersion: 1, maxVersion: 1 } });
    await r.next((f) => !!f.helloAck);
    r.sendFrame({ request: { id: 1, exec: { argv: ["touch", marker] } } });
    const e = (await r.next((f) => !!f.protocolError)).protocolError!;
    expect(e.code).toBe(ErrorCode.UNAUTHENTICATED);
    expect(e.fatal).toBe(true);
    await r.closed;
    expect(fs.existsSync(marker)).toBe(false);
  });
});

describe("tickets", () => {
  /** A full handshake on a raw connection; the ticket its AuthOk carried. */
  async function ticketFromHandshake(): Promise<Uint8Array> {
    const r = await rawTcp(agent.tcp);
    const ticket = (await handshake(r)).ticket!;
    r.socket.destroy();
    expect(ticket).toHaveLength(32);
    return ticket;
  }

  it("serves a request written behind a Hello with a ticket, once: replayed, the Hello gets a challenge and its request is dropped", async () => {
    const key = await testSigner();
    const ticket = await ticketFromHandshake();
    const hello = { hello: { minVersion: 1, maxVersion: 1, ticket, ticketAuth: { publicKey: key.publicKey, signature: await key.sign(ticketMessage(ticket)) } } };
    const first = path.join(keys, "ticket-first");
    const opened = await rawTcp(agent.tcp);
    opened.sendFrame(hello);
    opened.sendFrame({ request: { id: 1, exec: { argv: ["touch", first] } } });
    expect((await opened.next((f) => !!f.helloAck)).helloAck!.authChallenge ?? []).toHaveLength(0);
    expect((await opened.next((f) => !!f.authOk)).authOk!.ticket).toHaveLength(32);
    const started = (await opened.next((f) => !!f.response)).response!.exec!;
    expect(started.pid).toBeGreaterThan(0);
    // Waited for: a connection's end takes its processes with it.
    opened.sendFrame({ request: { id: 2, wait: { process: started.process } } });
    expect((await opened.next((f) => !!f.response)).response!.exit?.code).toBe(0);
    opened.socket.destroy();
    expect(fs.existsSync(first)).toBe(true);

    // The same bytes again, as one who recorded them would send them.
    const second = path.join(keys, "ticket-replayed");
    const replay = await rawTcp(agent.tcp);
    replay.sendFrame(hello);
    replay.sendFrame({ request: { id: 1, exec: { argv: ["touch", second] } } });
    replay.sendFrame({ request: { id: 3, ping: { nonce: 3 } } });
    const challenge = (await replay.next((f) => !!f.helloAck)).helloAck!.authChallenge!;
    expect(challenge).toHaveLength(32);
    // The key's holder can still go on (the client writes its requests again
    // behind the Auth); the dropped request never ran.
    replay.sendFrame({ auth: { publicKey: key.publicKey, signature: await key.sign(challenge) } });
    await replay.next((f) => !!f.authOk);
    replay.sendFrame({ request: { id: 2, ping: { nonce: 7 } } });
    // Frames are served in order: had the ping behind the replayed Hello been served, its answer would come first.
    expect((await replay.next((f) => !!f.response)).response!.id).toBe(2);
    replay.socket.destroy();
    expect(fs.existsSync(second)).toBe(false);
  });

  it("lets the CLI open each exec with its last ticket, kept only for its owner, and recover from one the agent no longer holds", async () => {
    const state = fs.mkdtempSync("/tmp/fractal-tickets-");
    const relay = await frameRelay(agent.tcp);
    try {
      const env = { FRACTAL_STATE: path.join(state, "vms") };
      const exec = async (word: string) => {
        const r = await cli(["--connect", relay.url, "exec", "--", "echo", word], env);
        expect(r.stderr).toBe("");
        expect(r.stdout.toString()).toBe(`${word}\n`);
        expect(r.code).toBe(0);
        return relay.connections.at(-1)!;
      };
      expect((await exec("first")).slice(0, 3)).toEqual(["hello", "auth", "request"]);
      const dir = path.join(state, "tickets");
      const [slot] = fs.readdirSync(dir);
      const pool = path.join(dir, slot!);
      const tickets = () => fs.readdirSync(pool).filter((n) => !n.startsWith("."));
      expect(tickets()).toHaveLength(1);
      expect(fs.statSync(path.join(pool, tickets()[0]!)).mode & 0o777).toBe(0o600);
      expect(fs.statSync(pool).mode & 0o777).toBe(0o700);
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
      const second = await exec("second");
      expect(second.slice(0, 2)).toEqual(["hello", "request"]);
      expect(second).not.toContain("auth");
      // The spent ticket went, the next came: one kept.
      expect(tickets()).toHaveLength(1);
      // A ticket this agent never issued (as after its restart): a challenge, then the same exec (and the wait sent
      // with it) again behind the Auth.
      const file = path.join(pool, tickets()[0]!);
      const kept = fs.readFileSync(file);
      kept.fill(1, 0, 32);
      fs.writeFileSync(file, kept);
      expect((await exec("third")).slice(0, 6)).toEqual(["hello", "request", "request", "auth", "request", "request"]);
      const fourth = await exec("fourth");
      expect(fourth.slice(0, 2)).toEqual(["hello", "request"]);
      expect(fourth).not.toContain("auth");
    } finally {
      relay.close();
      fs.rmSync(state, { recursive: true, force: true });
    }
  });

  it("gives CLIs started together a ticket each, never one two of them offer, and drops dead ones after a refusal", async () => {
    const state = fs.mkdtempSync("/tmp/fractal-tickets-");
    const relay = await frameRelay(agent.tcp);
    try {
      const env = { FRACTAL_STATE: path.join(state, "vms") };
      /** Runs `n` execs at once; each one's connection, as the agent was written to. */
      const together = async (n: number) => {
        const before = relay.connections.length;
        const runs = await Promise.all(Array.from({ length: n }, (_, i) => cli(["--connect", relay.url, "exec", "--", "echo", `cli ${i}`], env)));
        runs.forEach((r, i) => {
          expect(r.stderr).toBe("");
          expect(r.stdout.toString()).toBe(`cli ${i}\n`);
        });
        return relay.connections.slice(before);
      };
      const refused = (c: string[]) => c[0] === "hello" && c[1] === "request" && c.includes("auth");
      const ticketed = (c: string[]) => c[0] === "hello" && c[1] === "request" && !c.includes("auth");
      await together(1);
      // Each round starts with tickets kept by the last: had two CLIs offered
      // the same one, the agent would have refused the second's.
      const rounds = [await together(4), await together(4), await together(4)];
      for (const round of rounds) {
        expect(round).toHaveLength(4);
        expect(round.filter(refused)).toEqual([]);
      }
      // Each CLI took one at most and left one: the pool grew, within its bound (POOL_SIZE).
      const pool = path.join(state, "tickets", fs.readdirSync(path.join(state, "tickets"))[0]!);
      const tickets = () => fs.readdirSync(pool).filter((n) => !n.startsWith("."));
      expect(tickets().length).toBeGreaterThanOrEqual(1);
      expect(tickets().length).toBeLessThanOrEqual(8);
      // After a restart none of them is good: the first CLI's refusal drops
      // the rest, so the next CLI pays no second round trip for another.
      const dead = fs.readFileSync(path.join(pool, tickets()[0]!)).fill(1, 0, 32);
      for (const t of tickets()) fs.rmSync(path.join(pool, t));
      for (const t of ["0a", "0b", "0c"]) fs.writeFileSync(path.join(pool, t), dead, { mode: 0o600 });
      expect((await together(1)).filter(refused)).toHaveLength(1);
      expect(tickets()).toHaveLength(1);
      expect((await together(1)).filter(ticketed)).toHaveLength(1);
    } finally {
      relay.close();
      fs.rmSync(state, { recursive: true, force: true });
    }
  });
});

describe("per-key policy", () => {
  const observer = () => path.join(keys, "observer");

  it("lets an observer key list and ping", async () => {
    const ps = await cli(["--connect", agent.tcp, "--key", observer(), "ps", "-a"]);
    expect(ps.code).toBe(0);
    expect(ps.stdout.toString()).toMatch(/^CONTAINER ID/);
    expect((await cli(["--connect", agent.tcp, "--key", observer(), "ping"])).code).toBe(0);
  });

  it("refuses an observer key's exec with permission denied, and nothing runs", async () => {
    const marker = path.join(keys, "observer-was-here");
    const r = await cli(["--connect", agent.tcp, "--key", observer(), "exec", "--", "touch", marker]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/permission denied: key "\S+" may not send exec requests/);
    expect(fs.existsSync(marker)).toBe(false);
    // The connection was not spoiled for what the key may do.
    expect((await cli(["--connect", agent.tcp, "--key", observer(), "ps"])).code).toBe(0);
  });

  it("refuses an observer key's run and kill", async () => {
    const run = await cli(["--connect", agent.tcp, "--key", observer(), "run", "--rm", "busybox", "true"]);
    expect(run.code).toBe(125);
    expect(run.stderr).toMatch(/may not send run requests/);
    const kill = await cli(["--connect", agent.tcp, "--key", observer(), "kill", "nothing"]);
    expect(kill.code).toBe(125);
    expect(kill.stderr).toMatch(/may not send container_kill requests/);
  });
});

describe("failed attempts", () => {
  it("locks out a key after five failures from an address within a minute, logs each, and still lets other keys in", async () => {
    // A separate agent: the lockout would otherwise refuse the other tests' connections too.
    const a = await startAgent();
    try {
      const bad = ["--connect", a.tcp, "--key", path.join(keys, "locked"), "ping"];
      for (let i = 0; i < 5; i++) expect((await cli(bad)).stderr).toMatch(/is not authorised/);
      const sixth = await cli(bad);
      expect(sixth.stderr).toMatch(/too many failed attempts with key SHA256:\S+ from 127\.0\.0\.1; try again in \d+ s/);
      expect(sixth.code).toBe(125);
      // The lockout is per (address, key): an authorised key from the same address still gets in.
      const good = await cli(["--connect", a.tcp, "ping"]);
      expect(good.stderr).toBe("");
      expect(good.code).toBe(0);
      expect(a.log().match(/authentication failed/g)?.length).toBe(5);
      // Host-only channels are not locked out.
      expect((await cli(["--connect", a.unix, "ping"])).code).toBe(0);
    } finally {
      await a.stop();
    }
  });
});

describe("keygen", () => {
  it("writes a private key only its owner can read, and never overwrites one", async () => {
    const f = path.join(keys, "fresh");
    const r = await runCli(["keygen", "-f", f]);
    expect(r.code).toBe(0);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(`${f}.pub`, "utf8")).toMatch(/^ssh-ed25519 [A-Za-z0-9+/=]+ \S+\n$/);
    const before = fs.readFileSync(f);
    const again = await runCli(["keygen", "-f", f]);
    expect(again.code).toBe(125);
    expect(again.stderr).toMatch(/exists: not overwriting it/);
    expect(fs.readFileSync(f).equals(before)).toBe(true);
  });

  it("makes one default key when several first uses race for it, and every one of them uses it", async () => {
    // Each netboot-serve --write, like boot, makes the user's key when there is
    // none and puts it on the guest's command line.
    const home = fs.mkdtempSync("/tmp/fractal-key-race-");
    const blob = path.join(home, "blob");
    fs.writeFileSync(blob, "x");
    const env = { XDG_CONFIG_HOME: home, FRACTAL_KEY: "" };
    const runs = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((i) =>
        runCli(["netboot-serve", "--kernel", blob, "--initrd", blob, "--write", path.join(home, `out${i}`)], { env }),
      ),
    );
    for (const r of runs) expect(r.stderr).not.toMatch(/exists|EEXIST/);
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(runs.filter((r) => /made a key for connecting to VMs/.test(r.stderr))).toHaveLength(1);
    const key = path.join(home, "fractal", "key");
    const made = pub(key).split(" ")[1]!;
    for (let i = 0; i < 6; i++) {
      const script = fs.readdirSync(path.join(home, `out${i}`)).find((f) => f.endsWith(".ipxe"))!;
      expect(fs.readFileSync(path.join(home, `out${i}`, script), "utf8")).toContain(`fractal.key=${made}`);
    }
    expect(fs.readdirSync(path.join(home, "fractal")).sort()).toEqual(["key", "key.pub"]);
    fs.rmSync(home, { recursive: true, force: true });
  });

  it("refuses a key file others can read", async () => {
    const f = path.join(keys, "loose");
    await runCli(["keygen", "-f", f]);
    fs.chmodSync(f, 0o644);
    const r = await cli(["--connect", agent.tcp, "--key", f, "ping"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/readable by others \(mode 644\): chmod 600 it/);
  });
});
