#!/usr/bin/env node
// The `agent-pool` command. In production (NODE_ENV=production, as in the Docker image) it runs the
// compiled JavaScript in dist/ (`npm run build`), without the TypeScript loader: faster to start and
// lighter. Anywhere else it runs the sources through tsx, so a checkout needs no build step and an
// old dist/ can never shadow an edited source.
import { existsSync } from "node:fs";

const compiled = new URL("../dist/cli.js", import.meta.url);
if (process.env.NODE_ENV === "production" && existsSync(compiled)) {
  await import(compiled.href);
} else {
  if (process.env.NODE_ENV === "production") {
    process.stderr.write("agent-pool: NODE_ENV=production but dist/ is not built (npm run build): running the TypeScript sources through tsx\n");
  }
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli.ts");
}
