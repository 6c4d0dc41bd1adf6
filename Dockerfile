# agent-pool: the pool manager (HTTP API, reconciler, Railway provider) in one container.
# Built by Railway from railway.toml; `docker build -t agent-pool .` works the same way.
#
# Two stages: the first compiles the TypeScript sources to JavaScript (`npm run build` → dist/),
# the second runs dist/ on plain node with production dependencies only. No TypeScript loader at
# run time: the process starts faster and holds less memory (README, "Performance";
# `npm run bench -- startup`).

# ---- build: all dependencies (typescript is a dev dependency), then tsc ----
FROM node:20-slim AS build
WORKDIR /app
# --ignore-scripts: the postinstall only prepares the embedded database's template, which the
# build does not need.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY src ./src
RUN npm run build

# ---- run: production dependencies and the compiled code ----
FROM node:20-slim

ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false

WORKDIR /app

# Dependencies first, so a source change does not reinstall them. --ignore-scripts: see above
# (on Railway the pool runs on DATABASE_URL; without it PGlite runs initdb at first start).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --ignore-scripts \
 && npm cache clean --force

# dist/ sits beside package.json and node_modules, as modules expect (scripts/build.mjs).
# bin/ runs dist/ when NODE_ENV=production (`npx agent-pool status` inside the container).
COPY bin ./bin
COPY --from=build /app/dist ./dist

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

# Liveness for plain Docker (no curl in -slim): /healthz, not /readyz, so a database outage does not
# mark every container unhealthy at once. Railway uses railway.toml's healthcheckPath (/readyz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3001) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Reported by GET /version (there is no git in the image). Railway passes
# its variables to a Dockerfile build only when declared with ARG; last, so a new commit
# invalidates no earlier layer.
ARG RAILWAY_GIT_COMMIT_SHA=""
ENV GIT_COMMIT=${RAILWAY_GIT_COMMIT_SHA}

# Exec form: node is PID 1 and gets SIGTERM itself; `serve` handles it (stops the reconciler,
# gives up the lease, closes the HTTP server and the database) within 30 s.
CMD ["node", "dist/cli.js", "serve"]
