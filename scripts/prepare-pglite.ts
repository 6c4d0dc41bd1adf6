/**
 * `npm install` hook (postinstall): prepares the embedded database's cluster template (see
 * pgliteTemplatePath in src/db/pglite.ts), so a first `npm start` skips initdb. Never fails the
 * install: without the template, PGlite runs initdb at the first start instead (5 to 8 s slower).
 */
try {
  const { existsSync } = await import("node:fs");
  const { join } = await import("node:path");
  const { buildPgliteTemplate, pgliteTemplatePath } = await import("../src/db/pglite.ts");
  const base = pgliteTemplatePath();
  if (!existsSync(join(base, "PG_VERSION")) || !existsSync(`${base}.tar`)) {
    const t0 = performance.now();
    const path = await buildPgliteTemplate();
    process.stdout.write(`agent-pool: prepared the embedded database template in ${Math.round(performance.now() - t0)} ms (${path})\n`);
  }
} catch (err) {
  process.stderr.write(`agent-pool: could not prepare the embedded database template (${(err as Error).message}); the first start will run initdb\n`);
}
