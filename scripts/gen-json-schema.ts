/**
 * Writes schema/porttrig.schema.json, the JSON Schema of the configuration
 * file, from the same zod schema that validates it (src/config/schema.ts).
 *
 *   npx tsc -p tsconfig.json && node dist/scripts/gen-json-schema.js
 *
 * test/config/schema.test.ts fails when the committed file is stale.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configJsonSchemaText } from '../src/config/schema.js';

/** The repository root: the nearest directory above this script with a package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above the script');
    dir = up;
  }
  return dir;
}

const out = join(repoRoot(), 'schema', 'porttrig.schema.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, configJsonSchemaText());
process.stdout.write(`wrote ${out}\n`);
