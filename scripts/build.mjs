#!/usr/bin/env node
// `npm run build`: compiles the TypeScript sources to plain JavaScript for the production start
// (`npm run start:prod`, the Docker image), so the pool manager runs without the tsx loader.
//
//   node scripts/build.mjs [--out-dir <dir>]      (default: dist/ beside package.json)
//
// tsc (tsconfig.build.json) rewrites the sources' `.ts` import specifiers to `.js`; this script
// then copies what tsc does not emit but the code reads beside itself: the SQL migrations and the
// dashboard's script and stylesheet. The output dir must sit one level below a directory holding
// package.json and node_modules (as dist/ does, and /app/dist in the image): modules find those
// from their own location, as the sources do from src/.
//
// Plain JavaScript on purpose: it runs before anything is compiled, without tsx.
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const at = args.indexOf("--out-dir");
const outDir = at >= 0 && args[at + 1] ? resolve(args[at + 1]) : join(root, "dist");

// A clean output: a file deleted from src/ must not survive in dist/.
rmSync(outDir, { recursive: true, force: true });
const tsc = spawnSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.build.json"), "--outDir", outDir], {
  stdio: "inherit",
  cwd: root,
});
if (tsc.status !== 0) {
  console.error("build: tsc failed");
  process.exit(tsc.status ?? 1);
}

/** Files the compiled code reads from its own directory: [source dir, file filter]. */
const ASSETS = [
  ["db/migrations", (name) => name.endsWith(".sql")],
  ["dashboard/assets", (name) => name.endsWith(".js") || name.endsWith(".css")],
];
let copied = 0;
for (const [dir, keep] of ASSETS) {
  mkdirSync(join(outDir, dir), { recursive: true });
  for (const name of readdirSync(join(root, "src", dir))) {
    if (!keep(name)) continue;
    cpSync(join(root, "src", dir, name), join(outDir, dir, name));
    copied++;
  }
}
console.log(`build: compiled src/ to ${outDir} (+${copied} migrations and assets)`);
