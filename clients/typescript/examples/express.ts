// An Express route that needs a valid latchkey access token.
//   npm install express @types/express ./clients/typescript
import express from "express";
import { TokenVerifier } from "@latchkey/client";

const verifier = new TokenVerifier("http://127.0.0.1:8080", {
  issuer: "latchkey",
  audience: "latchkey",
  tenantId: "default",
});

const app = express();

app.get("/me", async (req, res) => {
  const token = /^Bearer (.+)$/i.exec(req.header("authorization") ?? "")?.[1];
  if (!token) return res.status(401).json({ error: "a bearer token is required" });
  try {
    const claims = await verifier.verify(token);
    res.json({ userId: claims.sub, email: claims.email });
  } catch {
    res.status(401).json({ error: "invalid access token" });
  }
});

app.listen(3000);
