// latchkey client: generated code (./gen, protobuf-es v2) plus a thin layer:
// the API key set once, errors as LatchkeyError (reason, retryAfter, field),
// and a TokenVerifier on jose.
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";

import { AdminService } from "./gen/latchkey/v1/admin_pb.js";
import { AuthService, ErrorReason } from "./gen/latchkey/v1/auth_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export * from "./gen/latchkey/v1/auth_pb.js";
export * from "./gen/latchkey/v1/admin_pb.js";
export { Code } from "@connectrpc/connect";

/** A failed call. `reason` is the stable code (`CODE_INVALID`, `RATE_LIMITED`,
 * … : an `ErrorReason` name without its `ERROR_REASON_` prefix), empty when the
 * status carries no ErrorInfo (e.g. the connection failed; `code` says so). */
export class LatchkeyError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly reason: string,
    /** Seconds to wait, for `RATE_LIMITED`. */
    readonly retryAfter: number | undefined,
    /** The request field at fault, for bad input. */
    readonly field: string | undefined,
    override readonly cause?: unknown,
  ) {
    super(`${reason || Code[code]}: ${message}`);
    this.name = "LatchkeyError";
  }

  /** Decodes ErrorInfo, RetryInfo and BadRequest from any error of a call. */
  static from(error: unknown): LatchkeyError {
    const connect = ConnectError.from(error);
    const info = connect.findDetails(ErrorInfoSchema)[0];
    const retry = connect.findDetails(RetryInfoSchema)[0]?.retryDelay;
    const bad = connect.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field;
    return new LatchkeyError(
      connect.code,
      connect.rawMessage,
      info?.reason ?? "",
      retry ? Number(retry.seconds) + retry.nanos / 1e9 : undefined,
      info?.metadata["field"] || bad || undefined,
      error,
    );
  }
}

/** The reason a value of the proto's ErrorReason enum stands for. */
export function reasonName(reason: ErrorReason): string {
  return ErrorReason[reason];
}

export interface ClientOptions {
  /** An app key (`lk_app_…`) for AuthService, an admin key for AdminService. */
  apiKey?: string;
  /** Per-call timeout in milliseconds (default 10 s). */
  timeoutMs?: number;
}

function wrap<S extends DescService>(client: Client<S>): Client<S> {
  return new Proxy(client, {
    get(target, name, receiver) {
      const method: unknown = Reflect.get(target, name, receiver);
      if (typeof method !== "function") return method;
      // Every latchkey RPC is unary: one awaited answer.
      return async (...args: unknown[]) => {
        try {
          return await (method as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (error) {
          throw LatchkeyError.from(error);
        }
      };
    },
  });
}

/** AuthService and AdminService over gRPC (HTTP/2) at `baseUrl`
 * (`http://host:port` of latchkey's gRPC listener, or `https://…`). */
export function createLatchkeyClient(baseUrl: string, options: ClientOptions = {}) {
  const auth: Interceptor = (next) => (req) => {
    if (options.apiKey) req.header.set("authorization", `Bearer ${options.apiKey}`);
    return next(req);
  };
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [auth],
    defaultTimeoutMs: options.timeoutMs ?? 10_000,
  });
  return {
    auth: wrap(createClient(AuthService, transport)),
    admin: wrap(createClient(AdminService, transport)),
  };
}

/** The JWKS URL of a tenant on latchkey's HTTP listener. */
export function jwksUrl(httpBaseUrl: string, tenantId?: string): URL {
  const base = httpBaseUrl.replace(/\/+$/, "");
  return new URL(
    !tenantId || tenantId === "default"
      ? `${base}/.well-known/jwks.json`
      : `${base}/tenants/${encodeURIComponent(tenantId)}/.well-known/jwks.json`,
  );
}

export interface VerifierOptions {
  issuer: string;
  audience: string;
  /** When set, tokens of any other tenant are refused (and this tenant's JWKS is used). */
  tenantId?: string;
  /** Where the keys are, when not at latchkey's own JWKS path for the tenant. */
  jwksUrl?: URL;
  /** No refetch for an unknown `kid` within this many ms of the last fetch (default 10 s). */
  cooldownMs?: number;
  /** Refetch the key set after this many ms in any case (default 10 min). */
  cacheMaxAgeMs?: number;
}

/** The claims of a latchkey access token. */
export interface AccessTokenClaims extends JWTPayload {
  sub: string;
  email: string;
  sid: string;
  tid: string;
}

/** Checks signature (key from the tenant's JWKS, cached, refetched on an
 * unknown `kid`), `alg`, `exp`/`nbf`, `iss`, `aud` and optionally `tid`. */
export class TokenVerifier {
  private readonly keys;

  constructor(
    httpBaseUrl: string,
    private readonly options: VerifierOptions,
  ) {
    this.keys = createRemoteJWKSet(options.jwksUrl ?? jwksUrl(httpBaseUrl, options.tenantId), {
      cooldownDuration: options.cooldownMs ?? 10_000,
      cacheMaxAge: options.cacheMaxAgeMs ?? 600_000,
    });
  }

  /** The claims, or a rejection (jose's `JOSEError` subclasses). */
  async verify(token: string): Promise<AccessTokenClaims> {
    const { payload } = await jwtVerify<AccessTokenClaims>(token, this.keys, {
      issuer: this.options.issuer,
      audience: this.options.audience,
      algorithms: ["EdDSA", "ES256", "RS256"],
      requiredClaims: ["exp", "nbf", "sub", "tid"],
    });
    if (this.options.tenantId !== undefined && payload.tid !== this.options.tenantId) {
      throw new Error(`token of tenant ${payload.tid}, not ${this.options.tenantId}`);
    }
    return payload;
  }
}
