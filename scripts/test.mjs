#!/usr/bin/env node
// `npm test`: type-check, lint, then run every test file (unit tests beside the code, cross-module and
// browser tests under test/) with Node's test runner. Concurrency 2 matches the 2-core machines.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;

function find(dir, out = []) {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) find(p, out);
    else if (name.endsWith(".test.ts")) out.push(relative(root, p));
  }
  return out;
}

const only = process.argv.slice(2);
const files = only.length > 0 ? only : [...find(join(root, "src")), ...find(join(root, "test"))].sort();

if (only.length === 0) {
  const tsc = spawnSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", root], { stdio: "inherit", cwd: root });
  if (tsc.status !== 0) {
    console.error("type check failed");
    process.exit(tsc.status ?? 1);
  }
  // The lint and the formatting check (Biome, biome.jsonc) run in CI with the type check: a finding fails the run.
  const lint = spawnSync(process.execPath, [join(root, "node_modules/@biomejs/biome/bin/biome"), "check", "."], { stdio: "inherit", cwd: root });
  if (lint.status !== 0) {
    console.error("lint failed (npm run lint)");
    process.exit(lint.status ?? 1);
  }
}

const res = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=600000", ...files], {
  stdio: "inherit",
  cwd: root,
  env: process.env,
});
process.exit(res.status ?? 1);
