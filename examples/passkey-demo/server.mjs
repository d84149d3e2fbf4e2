// The demo's backend: it holds latchkey's API key and the user's tokens, and
// the page talks only to it. No dependencies: node's http and fetch.
//
//   LATCHKEY_URL      latchkey's JSON gateway   (http://127.0.0.1:8080)
//   LATCHKEY_API_KEY  an app key of the tenant  (or LATCHKEY_DATA_DIR: its dev-api-key file)
//   PORT              where the page is served  (3000); open it as http://localhost:PORT,
//                     one of the tenant's passkey origins
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const latchkey = process.env.LATCHKEY_URL ?? "http://127.0.0.1:8080";
const apiKey =
  process.env.LATCHKEY_API_KEY ??
  fs.readFileSync(path.join(process.env.LATCHKEY_DATA_DIR ?? "latchkey-data", "dev-api-key"), "utf8").trim();
const page = fs.readFileSync(path.join(here, "index.html"));

// The demo's own sessions (cookie `demo` → what it knows of the user). A real
// app keeps these in its session store.
const sessions = new Map();

class Refused extends Error {
  constructor(status, body) {
    super(body.error ?? `latchkey answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function call(route, body) {
  const res = await fetch(`${latchkey}${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) throw new Refused(res.status, answer);
  return answer;
}

function signedIn(session, tokens) {
  Object.assign(session, {
    accessToken: tokens.token,
    refreshToken: tokens.refreshToken,
    sessionId: tokens.sessionId,
    email: tokens.user.email,
    userId: tokens.user.id,
  });
  return { email: session.email };
}

const routes = {
  "POST /api/email/start": async (s, { email }) => {
    const started = await call("/auth/start", { email, method: "METHOD_CODE" });
    s.pending = started.sessionId;
    return {};
  },
  "POST /api/email/verify": async (s, { code }) =>
    signedIn(s, await call("/auth/verify", { sessionId: s.pending, code })),
  "POST /api/passkeys/register/start": async (s) =>
    call("/passkeys/register/start", { accessToken: s.accessToken }),
  "POST /api/passkeys/register/finish": async (s, { ceremonyId, credential, name }) =>
    call("/passkeys/register/finish", {
      accessToken: s.accessToken,
      ceremonyId,
      credentialJson: JSON.stringify(credential),
      name,
    }),
  "GET /api/passkeys": async (s) => call("/passkeys/list", { accessToken: s.accessToken }),
  "POST /api/passkeys/login/start": async (s, { email }) => call("/passkeys/login/start", { email: email ?? "" }),
  "POST /api/passkeys/login/finish": async (s, { ceremonyId, credential }) =>
    signedIn(s, await call("/passkeys/login/finish", { ceremonyId, credentialJson: JSON.stringify(credential) })),
  "POST /api/logout": async (s) => {
    if (s.refreshToken) await call("/auth/revoke", { refreshToken: s.refreshToken });
    for (const key of Object.keys(s)) delete s[key];
    return {};
  },
  // What the demo shows (and its test checks): the user and their access token.
  "GET /api/me": async (s) => (s.accessToken ? { email: s.email, userId: s.userId, accessToken: s.accessToken } : {}),
};

http
  .createServer(async (req, res) => {
    let id = /(?:^|;\s*)demo=([\w-]+)/.exec(req.headers.cookie ?? "")?.[1];
    if (!id || !sessions.has(id)) {
      id = randomBytes(16).toString("base64url");
      sessions.set(id, {});
      res.setHeader("set-cookie", `demo=${id}; HttpOnly; SameSite=Strict; Path=/`);
    }
    const route = routes[`${req.method} ${req.url}`];
    if (req.method === "GET" && req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
      return;
    }
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    let body = "";
    for await (const chunk of req) body += chunk;
    try {
      const answer = await route(sessions.get(id), body ? JSON.parse(body) : {});
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    } catch (e) {
      const status = e instanceof Refused ? e.status : 500;
      res
        .writeHead(status, { "content-type": "application/json" })
        .end(JSON.stringify({ error: e.message, code: e.body?.code }));
    }
  })
  .listen(Number(process.env.PORT ?? 3000), "127.0.0.1", function () {
    console.log(`passkey demo on http://localhost:${this.address().port}`);
  });
