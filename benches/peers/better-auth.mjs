// The peer: better-auth with its email-OTP and JWT plugins, configured the
// way its documentation shows, on PostgreSQL, sending each code over SMTP
// from the request (the plugin awaits `sendVerificationOTP`).
//
// Environment: DATABASE_URL, PORT, SMTP_PORT (a relay on 127.0.0.1).
import http from "node:http";

import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { emailOTP, jwt } from "better-auth/plugins";
import nodemailer from "nodemailer";
import pg from "pg";

const port = Number(process.env.PORT);
const mail = nodemailer.createTransport({
  host: "127.0.0.1",
  port: Number(process.env.SMTP_PORT),
  secure: false,
  ignoreTLS: true,
  pool: true,
  maxConnections: 8,
});

const options = {
  baseURL: `http://127.0.0.1:${port}`,
  secret: "peer-comparison-secret-not-for-production-0123456789",
  database: new pg.Pool({
    connectionString: process.env.DATABASE_URL,
    max: Number(process.env.POOL_SIZE ?? 16),
  }),
  // latchkey's limits stay on but out of reach in the comparison; these are
  // off so neither side is measured refusing.
  rateLimit: { enabled: false },
  plugins: [
    emailOTP({
      otpLength: 6,
      expiresIn: 600,
      async sendVerificationOTP({ email, otp }) {
        await mail.sendMail({
          from: "Peer <login@peer.test>",
          to: email,
          subject: `${otp} is your sign-in code`,
          text: `Your code is ${otp}`,
        });
      },
    }),
    jwt(),
  ],
};

const { runMigrations } = await getMigrations(options);
await runMigrations();
const auth = betterAuth(options);
http.createServer(toNodeHandler(auth)).listen(port, "127.0.0.1", () => {
  console.log(`better-auth listening on ${port}`);
});
