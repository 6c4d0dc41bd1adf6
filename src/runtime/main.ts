/**
 * Entry point for one runtime process: `node --import tsx src/runtime/main.ts` with PORT and
 * GATEWAY_TOKEN set (see optionsFromEnv in server.ts for the rest). stdout carries exactly one line,
 * `listening on <url>`, so a spawner can wait for it; everything else is logged to stderr.
 */
import { optionsFromEnv, startRuntime } from "./server.ts";

let options: ReturnType<typeof optionsFromEnv>;
try {
  options = optionsFromEnv(process.env);
} catch (err) {
  process.stderr.write(`agent-pool runtime: ${(err as Error).message}\n`);
  process.exit(1);
}

const { exitAfterMs, ...runtimeOptions } = options;
const runtime = await startRuntime(runtimeOptions);
process.stdout.write(`listening on ${runtime.url}\n`);

let stopping = false;
function stop(signal: NodeJS.Signals): void {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`agent-pool runtime: ${signal}, shutting down\n`);
  // Don't let a stuck connection keep a terminated instance alive.
  setTimeout(() => process.exit(0), 3000).unref();
  runtime.close().then(
    () => process.exit(0),
    () => process.exit(0),
  );
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

if (exitAfterMs !== undefined) {
  // Fault knob: simulates a runtime that crashes on its own.
  setTimeout(() => {
    process.stderr.write(`agent-pool runtime: exiting after ${exitAfterMs} ms (RUNTIME_EXIT_AFTER_MS)\n`);
    process.exit(1);
  }, exitAfterMs);
}
