/**
 * The invite-link host allow-list of a pool (JOIN_URL_HOSTS, or the pool's `joinUrlHosts`): the
 * earlier system refused `dev.` links in production, because a link of the other network spends an
 * instance on a join that can never succeed.
 */

/** True when `joinUrl`'s host is allowed (exact host name, case-insensitive; a trailing dot ignored). */
export function joinUrlHostAllowed(joinUrl: string, hosts: readonly string[] | null | undefined): boolean {
  if (hosts === null || hosts === undefined) return true;
  let host: string;
  try {
    host = new URL(joinUrl).hostname.toLowerCase().replace(/\.$/, "");
  } catch {
    return false;
  }
  return hosts.includes(host);
}
