/** Turns schema issues into sentences that name the field and say what it takes. */
import type { z } from 'zod';

/** `limits.queue_depth`, `messages[0].role` */
export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

/** What a value is, for "got ..." in messages: a short JSON rendering for scalars, the kind otherwise. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  return `${typeof v} ${String(v)}`;
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/**
 * One sentence per issue. `noun` is what the thing is called in the sentence ("field", "key");
 * `where` may add the source of a key (a file, a variable, a flag); `suggest` may add a "did you
 * mean" to an unknown key (given the path of its mapping and the key).
 */
export function describeIssues(
  issues: ReadonlyArray<z.core.$ZodIssue>,
  input: unknown,
  noun: string,
  where: (path: string) => string = () => '',
  suggest: (path: ReadonlyArray<PropertyKey>, key: string) => string = () => '',
): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) {
        const p = fieldPath([...issue.path, k]);
        out.push(`unknown ${noun} "${p}"${where(p)}${suggest(issue.path, k)}`);
      }
      continue;
    }
    const p = fieldPath(issue.path);
    if (issue.code === 'custom' && p === '') {
      out.push(issue.message);
      continue;
    }
    const got = describeValue(valueAt(input, issue.path));
    const name = p === '' ? 'the request' : `${noun} "${p}"${where(p)}`;
    out.push(`${name} ${issue.message}, got ${got}`);
  }
  return out;
}
