/**
 * Splitting text on special tokens before tokenizing (llama.cpp's tokenizer_st_partition).
 * Every occurrence of a special token's text becomes that token; longer tokens are matched
 * first. User-defined tokens are always split out; control and unknown tokens only when
 * `parseSpecial` is set. Tokens with lstrip/rstrip eat the ASCII whitespace beside them.
 */
import { Attr, type Vocab } from './vocab.js';

export type Fragment = { text: string } | { id: number };

/** C isspace() in the "C" locale. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

export function partition(vocab: Vocab, text: string, parseSpecial: boolean): Fragment[] {
  if (text.length === 0) return [];
  let frags: Fragment[] = [{ text }];
  for (const id of vocab.specialTokens) {
    const attr = vocab.attrs[id]!;
    if (!parseSpecial && attr & (Attr.CONTROL | Attr.UNKNOWN)) continue;
    const special = vocab.tokens[id]!;
    if (!text.includes(special)) continue; // fast path: most special tokens never occur
    const next: Fragment[] = [];
    for (const frag of frags) {
      if (!('text' in frag)) {
        next.push(frag);
        continue;
      }
      const raw = frag.text;
      let from = 0;
      for (let at = raw.indexOf(special, from); at >= 0; at = raw.indexOf(special, from)) {
        let leftEnd = at;
        if (attr & Attr.LSTRIP) while (leftEnd > from && isSpace(raw.charCodeAt(leftEnd - 1))) leftEnd--;
        if (leftEnd > from) next.push({ text: raw.slice(from, leftEnd) });
        next.push({ id });
        from = at + special.length;
        if (attr & Attr.RSTRIP) while (from < raw.length && isSpace(raw.charCodeAt(from))) from++;
      }
      if (from < raw.length) next.push({ text: raw.slice(from) });
    }
    frags = next;
  }
  return frags;
}
