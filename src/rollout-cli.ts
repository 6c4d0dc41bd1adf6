/**
 * `agent-pool rollout …`: a pool's rollouts from the command line (issue 11), through the client
 * library like every remote command. `status` (the current one: progress, outcome), `history`,
 * `pause`, `resume` (also retries a halted rollout) and `undo` (back to the previous template: a
 * rollout of it starts), as `kubectl rollout` names them.
 */
import type { Command } from "commander";
import type { PoolClient, Rollout } from "./client/index.ts";
import type { CommandOptions } from "./cli-admin.ts";

export interface RemoteCommandKit {
  /** Runs a remote command: JSON or the human rendering on stdout, errors as the CLI prints them. */
  remote: <A extends unknown[]>(
    run: (c: PoolClient, o: CommandOptions, ...args: A) => Promise<[value: unknown, human: () => string]>,
  ) => (...args: unknown[]) => Promise<void>;
  table: (rows: Array<Record<string, unknown>>, columns: string[]) => string;
}

export const ROLLOUT_EXAMPLE: [command: string, example: string] = ["rollout", "agent-pool rollout status default      # also: history, pause, resume, undo"];

/** One rollout in a few lines: state, progress, why it halted. */
export function describeRollout(r: Rollout): string {
  const p = r.progress;
  const lines = [
    `rollout ${r.id} of pool ${r.pool}: ${r.status} (${r.reason}), template ${r.fromHash ?? "?"} → ${r.toHash}`,
    `  updated ${p.updated}/${p.total}, ${p.remaining} left, ${p.inFlight} in flight (max surge ${r.maxSurge}), ` +
      `${p.failed} failed (${p.failuresInARow} in a row, halts at ${r.haltAfter}), claimable ${p.claimable ?? "-"} (fewest ${p.minClaimable ?? "-"})`,
    `  started ${r.startedAt}${r.finishedAt ? `, finished ${r.finishedAt}` : ""}`,
  ];
  if (r.haltReason) lines.push(`  halted: ${r.haltReason}`);
  return lines.join("\n");
}

export function registerRolloutCommands(program: Command, kit: RemoteCommandKit): void {
  const { remote, table } = kit;
  const rollout = program.command("rollout").description("a pool's rollout of a changed template: status, history, pause, resume, undo");

  rollout
    .command("status <pool>")
    .description("the pool's current rollout: progress (updated / total, failures) and outcome")
    .action(
      remote(async (c, _o, pool: string) => {
        const s = await c.rollout(pool);
        return [s.current, () => (s.current ? describeRollout(s.current) : `pool ${s.pool} has had no rollout`)];
      }),
    );

  rollout
    .command("history <pool>")
    .description("the pool's rollouts, newest first")
    .action(
      remote(async (c, _o, pool: string) => {
        const s = await c.rollout(pool);
        const all = [...(s.current ? [s.current] : []), ...s.history];
        return [
          all,
          () =>
            table(
              all.map((r) => ({
                id: r.id,
                status: r.status,
                reason: r.reason,
                from: r.fromHash,
                to: r.toHash,
                updated: `${r.progress.updated}/${r.progress.total}`,
                failed: r.progress.failed,
                started: r.startedAt,
                finished: r.finishedAt,
              })),
              ["id", "status", "reason", "from", "to", "updated", "failed", "started", "finished"],
            ),
        ];
      }),
    );

  rollout
    .command("pause <pool>")
    .description("pause the pool's running rollout (it creates and retires nothing until resumed)")
    .action(
      remote(async (c, _o, pool: string) => {
        const r = await c.pauseRollout(pool);
        return [r, () => describeRollout(r.rollout)];
      }),
    );

  rollout
    .command("resume <pool>")
    .description("resume the pool's paused rollout, or retry a halted one")
    .action(
      remote(async (c, _o, pool: string) => {
        const r = await c.resumeRollout(pool);
        return [r, () => describeRollout(r.rollout)];
      }),
    );

  rollout
    .command("undo <pool>")
    .description("go back to the pool's previous template (a rollout of it starts)")
    .action(
      remote(async (c, _o, pool: string) => {
        const r = await c.rollBack(pool);
        return [r, () => `pool ${r.pool.id} back to template ${r.pool.templateHash}${r.rollout ? `\n${describeRollout(r.rollout)}` : ""}`];
      }),
    );
}
