/**
 * The top-up bound: an operator raises a key's spending limit by an amount, never past the
 * configured maximum (the earlier system let instances top themselves up by $20 steps to $100,
 * OPENROUTER_TOPUP_MAX, seed-system §2). Pure, table-tested.
 */

export type TopUpDecision = { ok: true; limit: number } | { ok: false; reason: string };

/** Cents, as people count money (0.1 + 0.2 is 0.3 here). */
export function roundCents(usd: number): number {
  return Math.round(usd * 100) / 100;
}

export function usd(amount: number): string {
  return `$${roundCents(amount).toFixed(2)}`;
}

/**
 * The limit after adding `amount` to `current`, or why not: the amount must be a positive number
 * of cents, the key must have a limit to raise (null means none), and the result must not pass `max`.
 */
export function topUpLimit(current: number | null, amount: number, max: number): TopUpDecision {
  if (!Number.isFinite(amount) || amount <= 0) return { ok: false, reason: "The amount must be a positive number of dollars." };
  if (roundCents(amount) !== amount) return { ok: false, reason: "The amount must be whole cents." };
  if (current === null) return { ok: false, reason: "This key has no spending limit to raise." };
  const limit = roundCents(current + amount);
  if (limit > max) {
    const room = roundCents(max - current);
    return {
      ok: false,
      reason:
        room > 0
          ? `That would take the limit to ${usd(limit)}, above the maximum of ${usd(max)}; at most ${usd(room)} more.`
          : `The limit is already ${usd(current)}, the maximum is ${usd(max)}.`,
    };
  }
  return { ok: true, limit };
}
