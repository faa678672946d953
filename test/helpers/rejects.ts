// Refusals arrive as EdgeErrors with a code: one assertion for a promise that must reject so.
import { EdgeError } from '../../src/errors.js';
import type { TapTest } from '../fixtures/paths.js';

/** `p` rejects with an EdgeError of `code` whose message matches every one of `parts`. */
export async function rejects(t: TapTest, p: Promise<unknown>, code: string, ...parts: RegExp[]): Promise<void> {
  try {
    await p;
    t.fail(`expected ${code}, but it succeeded`);
  } catch (err) {
    t.ok(err instanceof EdgeError, 'an EdgeError');
    t.equal((err as EdgeError).code, code, (err as Error).message);
    for (const re of parts) t.match((err as Error).message, re);
  }
}
