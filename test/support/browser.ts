/**
 * The browser of the browser tests: Debian's Chromium when it is installed (/usr/bin/chromium),
 * else the Chromium that the `@sparticuz/chromium` npm package ships inside its registry package
 * (a brotli-compressed headless shell). Either way nothing is downloaded: `npm install` alone
 * gives the tests a browser on a machine that has nothing but Node (issue 9), and a machine with
 * Debian's Chromium keeps using it.
 *
 * Why not the package's `executablePath()` as is: it inflates into a fixed `/tmp/chromium` and
 * trusts whatever file is there, so a run killed mid-inflate, or another version's binary, would
 * be launched by every later run. Here the package's own inflate runs in a child process whose
 * TMPDIR is a fresh staging directory, which is then renamed into a directory named after the
 * package version: a directory of that name is complete by construction, and two test processes
 * inflating at once cannot see each other's half-written files (the loser of the rename discards
 * its copy). The child process keeps TMPDIR out of this process's environment, which the pool
 * processes that tests start inherit.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium, type Browser } from "playwright-core";
import { REPO_ROOT } from "./process.ts";

export const DEBIAN_CHROMIUM = "/usr/bin/chromium";

/**
 * Headless flags known to work on these machines (node-svc notes): without the background
 * networking ones Chromium keeps trying Google's hosts, which this closed network refuses.
 * playwright-core adds `--headless` and gives every launch a fresh, empty profile directory (it
 * refuses a `--user-data-dir` in args), so neither is listed here.
 */
export const HEADLESS_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface ChromiumExecutable {
  path: string;
  /** Where it comes from, for messages: "debian" or "@sparticuz/chromium@<version>". */
  source: string;
}

function sparticuzPackageDir(): string {
  // The package's exports hide package.json; its entry point is build/esm/index.js.
  return join(dirname(fileURLToPath(import.meta.resolve("@sparticuz/chromium"))), "..", "..");
}

/** Inflates the package's Chromium once per version into node_modules/.cache and returns its path. */
export async function sparticuzChromium(cacheRoot = join(REPO_ROOT, "node_modules", ".cache", "agent-pool")): Promise<ChromiumExecutable> {
  const pkgDir = sparticuzPackageDir();
  const version = (JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { version: string }).version;
  const source = `@sparticuz/chromium@${version}`;
  const dir = join(cacheRoot, `sparticuz-chromium-${version}`);
  const exe = join(dir, "chromium");
  if (existsSync(exe)) return { path: exe, source };

  mkdirSync(cacheRoot, { recursive: true });
  const staging = mkdtempSync(join(cacheRoot, `.sparticuz-chromium-${version}-`));
  try {
    const script = `const { default: C } = await import(${JSON.stringify(import.meta.resolve("@sparticuz/chromium"))}); process.stdout.write(await C.executablePath(${JSON.stringify(join(pkgDir, "bin"))}));`;
    const r = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, TMPDIR: staging, TMP: staging, TEMP: staging },
      encoding: "utf8",
      timeout: 120_000,
    }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`could not inflate ${source}'s Chromium: ${err.stderr || err.message}`);
    });
    if (r.stdout !== join(staging, "chromium")) throw new Error(`could not inflate ${source}'s Chromium: it answered ${JSON.stringify(r.stdout)}`);
    try {
      renameSync(staging, dir);
    } catch (err) {
      // Another process finished first: its directory is complete, ours is discarded below.
      if (!existsSync(exe)) throw err;
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return { path: exe, source };
}

/** Debian's Chromium when installed, else the one shipped by @sparticuz/chromium. */
export async function chromiumExecutable(): Promise<ChromiumExecutable> {
  if (existsSync(DEBIAN_CHROMIUM)) return { path: DEBIAN_CHROMIUM, source: "debian" };
  return sparticuzChromium();
}

/** Launches headless Chromium with the flags above. Never skips: a missing browser is an error. */
export async function launchChromium(): Promise<{ browser: Browser; executable: ChromiumExecutable }> {
  const executable = await chromiumExecutable();
  const browser = await chromium.launch({ executablePath: executable.path, args: HEADLESS_ARGS }).catch((err: Error) => {
    throw new Error(`could not launch Chromium from ${executable.source} (${executable.path}): ${err.message}`);
  });
  return { browser, executable };
}
