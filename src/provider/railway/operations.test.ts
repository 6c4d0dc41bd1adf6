import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { buildClientSchema, parse, validate, type IntrospectionQuery } from "graphql";
import { ALL_DOCUMENTS } from "./operations.ts";

const schemaPath = process.env.RAILWAY_SCHEMA_PATH ?? fileURLToPath(new URL("../../../../shared/railway/schema.json", import.meta.url));
const skip = existsSync(schemaPath) ? false : `Railway schema not found at ${schemaPath} (set RAILWAY_SCHEMA_PATH)`;

test("every document the provider sends validates against Railway's schema", { skip }, () => {
  const raw = JSON.parse(readFileSync(schemaPath, "utf8")) as { data?: IntrospectionQuery } & IntrospectionQuery;
  const schema = buildClientSchema(raw.data ?? raw);
  for (const [name, doc] of Object.entries(ALL_DOCUMENTS)) {
    const errors = validate(schema, parse(doc));
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
      name,
    );
  }
});
