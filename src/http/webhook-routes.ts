/**
 * Railway's deployment webhook (issue 10): `POST /api/webhooks/railway/<secret>`.
 *
 * An event is a hint, never a fact: it makes the lease holder health-check the instance whose
 * service it names at once (a `check` hint through the store, so any replica may receive it), and
 * only that check changes anything. A forged or replayed event costs one check of an instance of
 * ours and nothing else; an event for a service we do not know is acknowledged and ignored. The
 * secret is a path token of its own (the earlier system put its API key in the URL it stored at
 * Railway), compared in constant time; a wrong one is answered like an unknown route.
 */
import { z } from "zod";
import type { Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { sameSecret } from "./auth.ts";
import type { PoolServer } from "./server.ts";
import { ErrorView } from "./views.ts";

export interface WebhookRouteDeps {
  store: Store;
  /** The deployment's webhook secret. */
  secret: string;
  /** Rate limit of the route (the shared counters). */
  limited: ReadonlyArray<(req: never, reply: never) => Promise<void>>;
}

/** What the pool reads of a Railway event: the service it is about. Everything else is ignored. */
const RailwayEvent = z
  .object({
    type: z.string().max(200).optional(),
    resource: z
      .object({
        service: z
          .object({ id: z.string().min(1).max(200) })
          .partial()
          .optional(),
      })
      .partial()
      .optional(),
  })
  .passthrough();

export function registerWebhookRoutes(app: PoolServer, deps: WebhookRouteDeps): void {
  app.post(
    "/api/webhooks/railway/:secret",
    {
      onRequest: deps.limited as never,
      bodyLimit: 64 * 1024,
      schema: {
        description:
          "Railway deployment notifications (registered by the pool at start-up). An event only makes the pool health-check the named service's instance at once; the check decides.",
        params: z.object({ secret: z.string().min(1).max(200) }),
        body: z.unknown(),
        response: { 200: z.object({ ok: z.boolean(), checked: z.boolean() }), 400: ErrorView, 404: ErrorView, 429: ErrorView, 500: ErrorView },
      },
    },
    async (req) => {
      if (!sameSecret(req.params.secret, deps.secret)) throw new PoolError("NOT_FOUND");
      const event = RailwayEvent.safeParse(req.body);
      const serviceId = event.success ? event.data.resource?.service?.id : undefined;
      if (!serviceId) return { ok: true, checked: false };
      const row = await deps.store.rowForResource(serviceId, null);
      if (!row) return { ok: true, checked: false };
      const inst = await deps.store.getInstance(row.id);
      if (!inst) return { ok: true, checked: false };
      await deps.store.publishHint({ pool: inst.poolId, kind: "check", instanceId: inst.id });
      req.log.debug({ instanceId: inst.id, type: event.success ? event.data.type : undefined }, "railway event: checking the instance");
      return { ok: true, checked: true };
    },
  );
}
