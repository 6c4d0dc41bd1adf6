// Worker entry: workers do not inherit tsx's loader on Node 20, so register it here.
import { register } from "tsx/esm/api";

register();
await import("./load-worker.ts");
