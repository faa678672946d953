/**
 * "Did you mean ...?" for a misspelt name (a config key, an EDGELLM_* variable): the known names
 * within a small edit distance of it.
 */

/**
 * Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbouring characters each cost 1 (EMBEDED -> EMBEDDED is 1, EMEBDDED -> EMBEDDED is 1).
 */
export function editDistance(a: string, b: string): number {
  // d[i][j]: distance between a's first i and b's first j characters; three rows suffice.
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, prev2[j - 2]! + 1);
      row.push(d);
    }
    prev2 = prev;
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * The known names nearest to `name` (case-insensitive): those at the smallest distance found (at
 * most `max`), if it is within a third of the name's length (at least 1, at most 4 edits), so that
 * unrelated names are not offered.
 */
export function similarNames(name: string, known: Iterable<string>, max = 3): string[] {
  const limit = Math.min(4, Math.max(1, Math.floor(name.length / 3)));
  const lower = name.toLowerCase();
  const near = [...new Set(known)]
    .map((k) => ({ k, d: editDistance(lower, k.toLowerCase()) }))
    .filter(({ d }) => d > 0 && d <= limit);
  const best = Math.min(...near.map(({ d }) => d));
  return near
    .filter(({ d }) => d === best)
    .map(({ k }) => k)
    .sort()
    .slice(0, max);
}

/** "did you mean A?", "did you mean A or B?", or "" when nothing is close; `show` writes a name. */
export function didYouMean(name: string, known: Iterable<string>, show: (name: string) => string = (k) => k): string {
  const names = similarNames(name, known).map(show);
  if (names.length === 0) return '';
  const list = names.length === 1 ? names[0]! : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]!}`;
  return `did you mean ${list}?`;
}
