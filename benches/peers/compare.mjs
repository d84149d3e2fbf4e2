// latchkey next to better-auth, on the same PostgreSQL, under the same load
// generator (wrk, one connection per thread so each response belongs to the
// request before it). Run through ./run.sh, which installs the peer into a
// temporary folder; `node compare.mjs --help` lists the options.
//
// Each round starts both services on fresh databases and runs, for each in
// turn (A/B interleaved): StartAuth, then Verify with the codes those logins
// emailed, then Refresh (latchkey rotates its refresh token: each thread
// follows its own chain; better-auth's /token issues a JWT for a cookie
// session), then the JWKS. It reads the CPU the service and PostgreSQL spent
// from /proc, the service's peak RSS, and counts the emails the SMTP sink
// received.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import pg from "pg";
import { SMTPServer } from "smtp-server";

const { values: opt } = parseArgs({
  options: {
    "latchkey-bin": { type: "string" },
    "database-url": {
      type: "string",
      default: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    },
    connections: { type: "string", default: "16" },
    "start-seconds": { type: "string", default: "10" },
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "1" },
    "relay-ms": { type: "string", default: "0" },
    "drain-wait": { type: "string", default: "120" },
    append: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (opt.help || !opt["latchkey-bin"]) {
  console.log(`usage: node compare.mjs --latchkey-bin PATH [options]
  --database-url URL   admin URL of the PostgreSQL both services use (DATABASE_URL)
  --connections N      wrk connections (one per thread), and each service's pool size [16]
  --start-seconds N    how long StartAuth runs (its logins feed Verify) [10]
  --seconds N          how long Verify, Refresh and the JWKS run [5]
  --rounds N           A/B rounds, each on fresh databases [1]
  --relay-ms N         the SMTP sink's delay before accepting each message [0]
  --drain-wait N       seconds to wait for the emails of StartAuth [120]
  --append FILE        append the dated result table to FILE (docs/benchmarks.md)`);
  process.exit(opt.help ? 0 : 2);
}

const here = path.dirname(new URL(import.meta.url).pathname);
const conns = Number(opt.connections);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "latchkey-peers-"));
const CLK_TCK = 100;

// ---------------------------------------------------------------- the relay
function startSink(delayMs) {
  const codes = new Map();
  let received = 0;
  const server = new SMTPServer({
    disabledCommands: ["AUTH", "STARTTLS"],
    logger: false,
    size: 1 << 20,
    onData(stream, session, done) {
      let raw = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => (raw += chunk));
      stream.on("end", () => {
        const to = session.envelope.rcptTo[0]?.address?.toLowerCase();
        const subject = /^Subject:[ \t]*(.*)$/im.exec(raw)?.[1] ?? "";
        const code = /\b(\d{6,10})\b/.exec(subject)?.[1];
        if (to && code) codes.set(to, code);
        received += 1;
        setTimeout(done, delayMs);
      });
    },
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.server.address().port,
        codes,
        received: () => received,
        close: () => server.close(),
      }),
    );
  });
}

// -------------------------------------------------------------- processes
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function freshDatabase(name) {
  const admin = new pg.Client({ connectionString: opt["database-url"] });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(opt["database-url"]);
  url.pathname = `/${name}`;
  return url.toString();
}

async function waitFor(url, what) {
  for (let i = 0; i < 300; i++) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not come up at ${url}`);
}

function spawnService(cmd, args, env, logName) {
  const log = fs.openSync(path.join(work, logName), "w");
  const child = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", log, log],
  });
  child.on("exit", (code, signal) => {
    if (!child.stopping) console.error(`${logName}: exited (${code ?? signal}); see ${work}`);
  });
  return child;
}

async function startLatchkey(sink) {
  const db = await freshDatabase("latchkey_peers");
  const dataDir = fs.mkdtempSync(path.join(work, "latchkey-"));
  const http = await freePort();
  const grpc = await freePort();
  const env = {
    LATCHKEY_DATABASE_URL: db,
    LATCHKEY_DATA_DIR: dataDir,
    LATCHKEY_LOG: "warn",
  };
  const key = execFileSync(opt["latchkey-bin"], ["apikey", "create", "--name", "peers"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "ignore"],
  })
    .toString()
    .trim();
  const child = spawnService(
    opt["latchkey-bin"],
    ["serve"],
    {
      ...env,
      LATCHKEY_DATABASE_MAX_CONNECTIONS: String(conns),
      LATCHKEY_HTTP_ADDR: `127.0.0.1:${http}`,
      LATCHKEY_GRPC_ADDR: `127.0.0.1:${grpc}`,
      LATCHKEY_METRICS_ADDR: "127.0.0.1:0",
      LATCHKEY_SMTP_URL: `smtp://127.0.0.1:${sink.port}`,
      // Limits stay on (their cost is part of StartAuth) but out of reach.
      LATCHKEY_RATE_LIMIT_TENANT: "1000000000",
    },
    "latchkey.log",
  );
  const base = `http://127.0.0.1:${http}`;
  await waitFor(`${base}/readyz`, "latchkey");
  return {
    name: "latchkey",
    child,
    base,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    start: { path: "/auth/start", body: '{"email":"%s","method":"METHOD_CODE"}', id: "sessionId" },
    verify: { path: "/auth/verify", body: '{"sessionId":"%s","code":"%s"}' },
    jwks: "/.well-known/jwks.json",
  };
}

async function startBetterAuth(sink) {
  const db = await freshDatabase("better_auth_peers");
  const port = await freePort();
  const child = spawnService(
    process.execPath,
    [path.join(here, "better-auth.mjs")],
    { DATABASE_URL: db, PORT: String(port), SMTP_PORT: String(sink.port), POOL_SIZE: String(conns) },
    "better-auth.log",
  );
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/api/auth/ok`, "better-auth");
  return {
    name: "better-auth",
    child,
    base,
    headers: { "content-type": "application/json" },
    start: { path: "/api/auth/email-otp/send-verification-otp", body: '{"email":"%s","type":"sign-in"}' },
    verify: { path: "/api/auth/sign-in/email-otp", body: '{"email":"%s","otp":"%s"}' },
    jwks: "/api/auth/jwks",
  };
}

async function stop(service) {
  service.child.stopping = true;
  const exited = new Promise((r) => service.child.once("exit", r));
  service.child.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
}

// ------------------------------------------------------------ measurements
function ticks(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime stime cutime cstime: fields 14-17 (1-based), 12-15 after comm.
    return fields.slice(11, 15).reduce((a, b) => a + Number(b), 0);
  } catch {
    return 0;
  }
}

function postgresTicks() {
  let total = 0;
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const comm = fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      if (comm.startsWith("postgres")) total += ticks(pid);
    } catch {
      // gone
    }
  }
  return total;
}

function memory(pid, field) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) / 1024;
}

function duration(text) {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]];
}

// ------------------------------------------------------------------- wrk
function lua(service, scenario, files) {
  const headers = Object.entries(service.headers)
    .map(([k, v]) => `["${k}"] = "${v}"`)
    .join(", ");
  const common = `
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local headers = { ${headers} }
`;
  const pool = (file) => `
local pool, used = {}, 0
local function load_pool()
  local i = 0
  for line in io.lines("${file}") do
    if i % ${conns} == tid then pool[#pool + 1] = line end
    i = i + 1
  end
end
local function next_line()
  used = used + 1
  return pool[used] or pool[#pool] or "- -"
end
`;
  switch (scenario) {
    case "start":
      return `${common}
local n, email, out = 0, nil, nil
function init(args)
  out = io.open("${files.started}." .. tid, "w")
end
function request()
  n = n + 1
  email = string.format("%s-%d-%d@bench.test", "${service.name}", tid, n)
  return wrk.format("POST", "${service.start.path}", headers,
    string.format('${service.start.body}', email))
end
function response(status, hdrs, body)
  if status == 200 then
    ${
      service.start.id
        ? `local id = body:match('"${service.start.id}":"([^"]+)"')
    if id then out:write(id, " ", email, "\\n") end`
        : `out:write(email, " ", email, "\\n")`
    }
    out:flush()
  end
end`;
    case "verify":
      return `${common}${pool(files.codes)}
local out
function init(args)
  load_pool()
  out = io.open("${files.tokens}." .. tid, "w")
end
function request()
  local a, b = next_line():match("^(%S+) (%S+)$")
  return wrk.format("POST", "${service.verify.path}", headers,
    string.format('${service.verify.body}', a, b))
end
function response(status, hdrs, body)
  if status == 200 then
    local token = body:match('"refreshToken":"([^"]+)"')
    if token then out:write(token, " -\\n"); out:flush() end
  end
end`;
    case "refresh-latchkey":
      return `${common}${pool(files.tokens)}
local current
function init(args) load_pool() end
function request()
  if not current then current = next_line():match("^(%S+)") end
  return wrk.format("POST", "/auth/refresh", headers,
    string.format('{"refreshToken":"%s"}', current))
end
function response(status, hdrs, body)
  current = status == 200 and body:match('"refreshToken":"([^"]+)"') or nil
end`;
    case "refresh-better-auth":
      return `${common}
local cookies = {}
function init(args)
  for line in io.lines("${files.cookies}") do cookies[#cookies + 1] = line end
end
local n = 0
function request()
  n = n + 1
  headers["cookie"] = cookies[(tid + n) % #cookies + 1]
  return wrk.format("GET", "/api/auth/token", headers)
end`;
    case "jwks":
      return `${common}
function request()
  return wrk.format("GET", "${service.jwks}", {})
end`;
    default:
      throw new Error(scenario);
  }
}

async function runWrk(service, scenario, seconds, files) {
  const script = path.join(work, `${service.name}-${scenario}.lua`);
  fs.writeFileSync(script, lua(service, scenario, files));
  const pid = service.child.pid;
  const before = { server: ticks(pid), pg: postgresTicks(), load: os.loadavg()[0] };
  // Not execFileSync: the SMTP sink runs in this process and must keep
  // accepting mail while wrk runs.
  const wrk = spawn("wrk", ["-t", String(conns), "-c", String(conns), "-d", `${seconds}s`, "--latency", "-s", script, service.base], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  wrk.stdout.on("data", (chunk) => (out += chunk));
  const code = await new Promise((resolve) => wrk.on("exit", resolve));
  if (code !== 0) throw new Error(`wrk exited with ${code}: ${out}`);
  const server = ticks(pid) - before.server;
  const pgCpu = postgresTicks() - before.pg;
  const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const failed = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = /Socket errors: (.*)/.exec(out)?.[1];
  const ok = total - failed;
  const perSecond = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0) * (ok / Math.max(total, 1));
  const latency = (p) => duration(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out)?.[1] ?? "");
  return {
    scenario,
    ok,
    failed,
    errors,
    perSecond,
    p50: latency(50),
    p99: latency(99),
    serverMs: ((server / CLK_TCK) * 1000) / Math.max(ok, 1),
    pgMs: ((pgCpu / CLK_TCK) * 1000) / Math.max(ok, 1),
    rss: memory(pid, "VmRSS"),
    load: before.load,
  };
}

function concat(prefix) {
  const lines = [];
  for (let t = 0; t < conns; t++) {
    const file = `${prefix}.${t}`;
    if (fs.existsSync(file)) lines.push(...fs.readFileSync(file, "utf8").split("\n").filter(Boolean));
  }
  return lines;
}

async function signInForCookies(service, sink, n) {
  const cookies = [];
  for (let i = 0; i < n; i++) {
    const email = `cookie-${i}@bench.test`;
    const post = (p, body) =>
      // node's fetch sends Sec-Fetch-Mode, so better-auth's CSRF check wants
      // an Origin, as from a page of its own.
      fetch(`${service.base}${p}`, {
        method: "POST",
        headers: { ...service.headers, origin: service.base },
        body: JSON.stringify(body),
      });
    const sent = await post(service.start.path, { email, type: "sign-in" });
    if (!sent.ok) throw new Error(`better-auth send: ${sent.status} ${await sent.text()}`);
    for (let k = 0; k < 100 && !sink.codes.has(email); k++) await new Promise((r) => setTimeout(r, 50));
    const res = await post(service.verify.path, { email, otp: sink.codes.get(email) });
    if (!res.ok) throw new Error(`better-auth sign-in: ${res.status} ${await res.text()}`);
    cookies.push(
      res.headers
        .getSetCookie()
        .map((c) => c.split(";")[0])
        .join("; "),
    );
  }
  return cookies;
}

async function measure(service, sink) {
  const files = {
    started: path.join(work, `${service.name}-started`),
    codes: path.join(work, `${service.name}-codes`),
    tokens: path.join(work, `${service.name}-tokens`),
    cookies: path.join(work, `${service.name}-cookies`),
  };
  const results = [];
  const receivedBefore = sink.received();
  const start = await runWrk(service, "start", Number(opt["start-seconds"]), files);
  results.push(start);
  // The emails of those logins: how many had arrived when the run ended,
  // and how long the rest took.
  const atEnd = sink.received() - receivedBefore;
  const t0 = Date.now();
  while (sink.received() - receivedBefore < start.ok && Date.now() - t0 < Number(opt["drain-wait"]) * 1000) {
    await new Promise((r) => setTimeout(r, 200));
  }
  start.mail = {
    atEnd,
    delivered: sink.received() - receivedBefore,
    drainSeconds: (Date.now() - t0) / 1000,
  };
  const codes = concat(files.started)
    .map((line) => {
      const [id, email] = line.split(" ");
      const code = sink.codes.get(email);
      return code ? `${id} ${code}` : null;
    })
    .filter(Boolean);
  fs.writeFileSync(files.codes, `${codes.join("\n")}\n`);
  const verify = await runWrk(service, "verify", Number(opt.seconds), files);
  verify.pool = codes.length;
  results.push(verify);
  if (service.name === "latchkey") {
    fs.writeFileSync(files.tokens, `${concat(files.tokens).join("\n")}\n`);
    results.push(await runWrk(service, "refresh-latchkey", Number(opt.seconds), files));
  } else {
    fs.writeFileSync(files.cookies, `${(await signInForCookies(service, sink, conns)).join("\n")}\n`);
    results.push(await runWrk(service, "refresh-better-auth", Number(opt.seconds), files));
  }
  results.push(await runWrk(service, "jwks", Number(opt.seconds), files));
  return { name: service.name, results, rssPeak: memory(service.child.pid, "VmHWM") };
}

// ------------------------------------------------------------------- main
const rounds = [];
const sink = await startSink(Number(opt["relay-ms"]));
for (let round = 0; round < Number(opt.rounds); round++) {
  const order = round % 2 === 0 ? [startLatchkey, startBetterAuth] : [startBetterAuth, startLatchkey];
  const measured = {};
  for (const startService of order) {
    const service = await startService(sink);
    try {
      measured[service.name] = await measure(service, sink);
    } finally {
      await stop(service);
    }
  }
  rounds.push(measured);
  console.error(`round ${round + 1} done`);
}
sink.close();

const names = { start: "StartAuth", verify: "Verify", "refresh-latchkey": "Refresh", "refresh-better-auth": "Refresh", jwks: "JWKS" };
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
const lines = [];
lines.push(
  `Each cell: latchkey / better-auth (ratio). ${conns} connections, wrk one connection per thread, ` +
    `StartAuth ${opt["start-seconds"]} s, the others ${opt.seconds} s, relay delay ${opt["relay-ms"]} ms, ` +
    `${os.cpus().length} cores, ${os.cpus()[0].model}.`,
  "",
  "| round | call | req/s | p50 ms | p99 ms | server CPU ms/req | PostgreSQL CPU ms/req | refused | 1-min load before |",
  "|---|---|---|---|---|---|---|---|---|",
);
rounds.forEach((r, i) => {
  const a = r.latchkey.results;
  const b = r["better-auth"].results;
  a.forEach((x, k) => {
    const y = b[k];
    const pair = (key, d, better) =>
      `${f(x[key], d)} / ${f(y[key], d)} (${f(better === "high" ? x[key] / y[key] : y[key] / x[key], 1)}×)`;
    lines.push(
      `| ${i + 1} | ${names[x.scenario]} | ${pair("perSecond", 0, "high")} | ${f(x.p50, 2)} / ${f(y.p50, 2)} | ` +
        `${f(x.p99, 2)} / ${f(y.p99, 2)} | ${pair("serverMs", 3, "low")} | ${f(x.pgMs, 3)} / ${f(y.pgMs, 3)} | ` +
        `${x.failed} / ${y.failed} | ${f(x.load, 2)} / ${f(y.load, 2)} |`,
    );
  });
});
lines.push("", "| round | service | peak RSS MB | StartAuth emails at the end of the run | delivered | seconds to drain |", "|---|---|---|---|---|---|");
rounds.forEach((r, i) => {
  for (const name of ["latchkey", "better-auth"]) {
    const s = r[name].results[0];
    lines.push(
      `| ${i + 1} | ${name} | ${f(r[name].rssPeak, 0)} | ${s.mail.atEnd} of ${s.ok} | ${s.mail.delivered} | ${f(s.mail.drainSeconds, 1)} |`,
    );
  }
});
const table = lines.join("\n");
console.log(table);
if (opt.append) {
  const date = new Date().toISOString().slice(0, 10);
  fs.appendFileSync(
    opt.append,
    `\n## ${date}: latchkey next to better-auth (benches/peers/run.sh)\n\n${table}\n`,
  );
}
fs.rmSync(work, { recursive: true, force: true });
