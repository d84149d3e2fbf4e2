// The whole flow against the real server (started by clients/run-e2e.sh).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { decodeProtectedHeader } from "jose";

import { Code, createLatchkeyClient, jwksUrl, LatchkeyError, TokenVerifier } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`run these tests through clients/run-e2e.sh (missing ${name})`);
  return value;
}

const server = {
  grpc: `http://${env("LATCHKEY_E2E_GRPC")}`,
  http: env("LATCHKEY_E2E_HTTP"),
  apiKey: env("LATCHKEY_E2E_API_KEY"),
  mailbox: env("LATCHKEY_E2E_MAILBOX"),
  issuer: env("LATCHKEY_ISSUER"),
  audience: env("LATCHKEY_AUDIENCE"),
  binary: env("LATCHKEY_BIN"),
};

/** The codes the dev mailbox holds for `address`, oldest first. */
function codesFor(address: string): string[] {
  if (!existsSync(server.mailbox)) return [];
  const found: [number, string][] = [];
  for (const name of readdirSync(server.mailbox).filter((n) => n.endsWith(".eml"))) {
    const path = join(server.mailbox, name);
    const head = readFileSync(path, "utf8").split(/\r?\n\r?\n/, 1)[0];
    const to = /^To: (.*)$/im.exec(head)?.[1] ?? "";
    const code = /^Subject: (\d+) is your /im.exec(head)?.[1];
    if (to.includes(address) && code) found.push([statSync(path).mtimeMs, code]);
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, code]) => code);
}

/** Polls: the outbox and the key reload run on the server's own schedule. */
async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const address = () => `ts-${randomUUID().slice(0, 12)}@example.com`;

async function rejection(promise: Promise<unknown>): Promise<LatchkeyError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof LatchkeyError, `not a LatchkeyError: ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

test("the whole login flow", async () => {
  const { auth } = createLatchkeyClient(server.grpc, { apiKey: server.apiKey });
  const verifier = new TokenVerifier(server.http, {
    issuer: server.issuer,
    audience: server.audience,
    tenantId: "default",
    cooldownMs: 0,
  });
  const user = address();

  const started = await auth.startAuth({ email: user });
  const code = (await waitFor("the sign-in email", () => codesFor(user).at(-1)))!;
  assert.equal(code.length, started.codeLength);

  const wrong = code === "0".repeat(code.length) ? "1".repeat(code.length) : "0".repeat(code.length);
  const refused = await rejection(auth.verify({ sessionId: started.sessionId, code: wrong }));
  assert.equal(refused.reason, "CODE_INVALID");
  assert.equal(refused.code, Code.Unauthenticated);

  const verified = await auth.verify({ sessionId: started.sessionId, code });
  assert.equal(verified.user?.email, user);
  assert.ok(verified.newUser);

  const refreshed = await auth.refresh({ refreshToken: verified.refreshToken });
  const claims = await verifier.verify(refreshed.token);
  assert.equal(claims.sub, verified.user?.id);
  assert.equal(claims.sid, started.sessionId);
  assert.equal(claims.tid, "default");

  const strict = new TokenVerifier(server.http, { issuer: server.issuer, audience: "someone-else" });
  await assert.rejects(strict.verify(refreshed.token));
  // The default tenant's keys, but a verifier for another tenant: refused.
  const otherTenant = new TokenVerifier(server.http, {
    issuer: server.issuer,
    audience: server.audience,
    tenantId: "another",
    jwksUrl: jwksUrl(server.http),
  });
  await assert.rejects(otherTenant.verify(refreshed.token), /tenant/);

  // A rotated key: the server signs with a kid the verifier has not seen;
  // the verifier refetches the key set and accepts the token.
  const oldKid = decodeProtectedHeader(refreshed.token).kid;
  execFileSync(server.binary, ["keys", "rotate", "--activate-in", "0s"], { stdio: "pipe" });
  let refreshToken = refreshed.refreshToken;
  const rotated = await waitFor("a token signed by the new key", async () => {
    const answer = await auth.refresh({ refreshToken });
    refreshToken = answer.refreshToken;
    return decodeProtectedHeader(answer.token).kid !== oldKid ? answer : undefined;
  });
  assert.equal((await verifier.verify(rotated.token)).sub, verified.user?.id);

  await auth.revoke({ refreshToken });
  const ended = await rejection(auth.refresh({ refreshToken }));
  assert.equal(ended.reason, "REFRESH_TOKEN_INVALID");
});

test("a rate-limited call says when to retry", async () => {
  const { auth } = createLatchkeyClient(server.grpc, { apiKey: server.apiKey });
  const user = address();
  const limited = await rejection(
    (async () => {
      for (let i = 0; i < 10; i++) await auth.startAuth({ email: user }); // 3 allowed
    })(),
  );
  assert.equal(limited.reason, "RATE_LIMITED");
  assert.equal(limited.code, Code.ResourceExhausted);
  assert.ok(limited.retryAfter !== undefined && limited.retryAfter > 0);
});

test("bad input and bad keys are decoded", async () => {
  const good = createLatchkeyClient(server.grpc, { apiKey: server.apiKey });
  const bad = await rejection(good.auth.startAuth({ email: "not an address" }));
  assert.equal(bad.reason, "INVALID_ARGUMENT");
  assert.equal(bad.field, "email");

  const unknown = createLatchkeyClient(server.grpc, { apiKey: "lk_app_nope_nope" });
  assert.equal((await rejection(unknown.auth.startAuth({ email: address() }))).reason, "UNAUTHENTICATED");
});
