// The demo in a real browser: headless Chromium with the DevTools protocol's
// virtual authenticator (a platform passkey that always verifies the user),
// the demo backend, and the real latchkey binary on its zero-config SQLite
// and development mailbox.
//
//   LATCHKEY_BIN     the server binary     (../../target/debug/latchkey)
//   CHROMIUM         the browser           (/usr/bin/chromium)
//   SCREENSHOTS_DIR  where to save the page at each step (none by default)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createPublicKey, verify } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const here = path.dirname(new URL(import.meta.url).pathname);
const bin = process.env.LATCHKEY_BIN ?? path.resolve(here, "../../../target/debug/latchkey");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.SCREENSHOTS_DIR;

const children = [];
let browser;
let dataDir;
let gateway;
let demo;

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

function start(cmd, args, env, name) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (c) => (log += c));
  child.stderr.on("data", (c) => (log += c));
  child.log = () => `${name}:\n${log}`;
  children.push(child);
  return child;
}

async function until(what, check, seconds = 15) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}\n${children.map((c) => c.log()).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The code of the newest development-mailbox email to `email`. */
function codeFor(email) {
  return until(`the code emailed to ${email}`, async () => {
    const dir = path.join(dataDir, "mailbox");
    for (const name of fs.readdirSync(dir).sort().reverse()) {
      const mail = fs.readFileSync(path.join(dir, name), "utf8");
      if (!mail.includes(email)) continue;
      const code = /^Subject: (\d{6,10}) /m.exec(mail)?.[1];
      if (code) return code;
    }
    return undefined;
  });
}

/** Checks an EdDSA access token against latchkey's JWKS; returns its claims. */
async function verified(token) {
  const [header, payload, signature] = token.split(".");
  const { kid, alg } = JSON.parse(Buffer.from(header, "base64url"));
  assert.equal(alg, "EdDSA");
  const { keys } = await (await fetch(`${gateway}/.well-known/jwks.json`)).json();
  const jwk = keys.find((k) => k.kid === kid);
  assert.ok(jwk, `kid ${kid} is in the JWKS`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  assert.ok(
    verify(null, Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, "base64url")),
    "the signature verifies",
  );
  return JSON.parse(Buffer.from(payload, "base64url"));
}

before(async () => {
  assert.ok(fs.existsSync(bin), `no latchkey binary at ${bin} (cargo build, or set LATCHKEY_BIN)`);
  assert.ok(fs.existsSync(browserPath), `no Chromium at ${browserPath} (Debian: apt-get install chromium)`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "passkey-demo-"));
  const [http, grpc, page] = [await freePort(), await freePort(), await freePort()];
  gateway = `http://127.0.0.1:${http}`;
  demo = `http://localhost:${page}`;
  start(
    bin,
    ["serve"],
    {
      LATCHKEY_DATA_DIR: dataDir,
      LATCHKEY_HTTP_ADDR: `127.0.0.1:${http}`,
      LATCHKEY_GRPC_ADDR: `127.0.0.1:${grpc}`,
      LATCHKEY_METRICS_ADDR: "127.0.0.1:0",
      LATCHKEY_LOG: "warn",
    },
    "latchkey",
  );
  await until("latchkey", async () => (await fetch(`${gateway}/readyz`)).ok);
  await until("the development key", async () => fs.existsSync(path.join(dataDir, "dev-api-key")));
  start(
    process.execPath,
    [path.join(here, "..", "server.mjs")],
    { LATCHKEY_URL: gateway, LATCHKEY_DATA_DIR: dataDir, PORT: String(page) },
    "demo",
  );
  await until("the demo", async () => (await fetch(`${demo}/`)).ok);
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
  if (shots) fs.mkdirSync(shots, { recursive: true });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill("SIGTERM");
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test("sign up by email code, add a passkey, log out, sign in with it", async () => {
  const page = await browser.newPage({ viewport: { width: 640, height: 560 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const shot = async (name) => shots && page.screenshot({ path: path.join(shots, `${name}.png`) });
  const status = () => page.locator("#status").textContent();
  const email = "ada@example.com";

  // Sign up: the emailed code.
  await page.goto(`${demo}/`);
  await page.fill("#email", email);
  await page.click("#send-code");
  await page.locator("#code-form").waitFor();
  await shot("1-code-sent");
  await page.fill("#code", await codeFor(email));
  await page.click("#verify");
  await page.locator("#who", { hasText: email }).waitFor();

  // Add a passkey: the authenticator now holds one discoverable credential.
  await page.click("#add-passkey");
  await page.locator("#passkeys li").first().waitFor();
  assert.equal(await status(), "Passkey added.");
  assert.equal(await page.locator("#passkeys li").count(), 1);
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0].isResidentCredential, true);
  assert.equal(credentials[0].rpId, "localhost");
  await shot("2-passkey-added");
  const firstLogin = await page.evaluate(() => fetch("/api/me").then((r) => r.json()));

  // Log out, then back in with the passkey alone.
  await page.click("#logout");
  await page.locator("#signed-out").waitFor();
  await page.click("#passkey-login");
  await page.locator("#who", { hasText: email }).waitFor();
  assert.equal(await status(), "Signed in with a passkey.");
  await shot("3-signed-in-with-passkey");
  const me = await page.evaluate(() => fetch("/api/me").then((r) => r.json()));
  assert.equal(me.userId, firstLogin.userId, "the same user");
  const claims = await verified(me.accessToken);
  assert.equal(claims.email, email);
  assert.equal(claims.sub, me.userId);
  assert.ok(claims.exp > Date.now() / 1000, "not expired");
  const firstClaims = await verified(firstLogin.accessToken);
  assert.deepEqual(Object.keys(claims).sort(), Object.keys(firstClaims).sort(), "the claims of an emailed-code login");
  assert.notEqual(claims.sid, firstClaims.sid, "a new session");

  // Without an address: the browser offers the discoverable passkey.
  await page.click("#logout");
  await page.locator("#signed-out").waitFor();
  await page.fill("#email", "");
  await page.click("#passkey-login");
  await page.locator("#who", { hasText: email }).waitFor();
  const { credentials: after } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.ok(after[0].signCount >= 2, `the authenticator signed each login (count ${after[0].signCount})`);
  await page.close();
});
