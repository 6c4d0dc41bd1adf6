/** Version of this build: package.json's version and, where git is at hand, the commit. */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));

export function packageVersion(): { version: string; commit: string | null } {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
  let commit: string | null = process.env.GIT_COMMIT ?? null;
  if (!commit) {
    try {
      commit =
        execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "ignore"], timeout: 2000 })
          .toString()
          .trim() || null;
    } catch {
      commit = null;
    }
  }
  return { version: pkg.version, commit };
}
