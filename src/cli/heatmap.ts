/**
 * Attention heatmaps for `edgellm trace`: one PNG per (layer, head) whose pixels map exactly to
 * the matrix (row = query position, column = key position, each cell `cell` x `cell` pixels from
 * the grid's origin), with the tokens drawn along both axes when the cells are tall enough, and
 * one self-contained HTML page that shows every heatmap with the tokens along both axes.
 */
import { PNG } from 'pngjs';
import { GLYPH_HEIGHT, GLYPH_WIDTH, glyphRows } from './bitmap-font.js';

/** Cells above the diagonal (keys after the query, never seen) are drawn in this grey. */
export const HIDDEN_RGB = [232, 232, 232] as const;

// A perceptually ordered dark-to-bright ramp (viridis' ends and three points between): p = 0 is
// dark purple, p = 1 bright yellow, so a peak reads as light on dark.
const RAMP: ReadonlyArray<readonly [number, number, number]> = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/** The colour of probability p in [0, 1] (linear in p). */
export function rampColor(p: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, p)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const a = RAMP[i]!, b = RAMP[i + 1]!;
  return [0, 1, 2].map((c) => Math.round(a[c]! + (b[c]! - a[c]!) * f)) as [number, number, number];
}

/** Pixels per cell for T tokens: large for short prompts, at least 1, images at most ~768 px. */
export function cellSize(T: number): number {
  return Math.max(1, Math.min(16, Math.floor(768 / T)));
}

/** Token labels drawn on a heatmap: the query's left of each row, the key's above each column. */
export interface HeatmapLabels {
  texts: string[];
  /** Labels from this position on are generated tokens (drawn in red). */
  promptTokens: number;
}

/** Where the cells start and how big the image is. */
export interface HeatmapLayout {
  /** Pixels per cell. */
  cell: number;
  /** The top-left pixel of cell (0, 0): cell (q, k) spans x0 + k * cell and y0 + q * cell. */
  x0: number;
  y0: number;
  width: number;
  height: number;
}

const LABEL_CHARS = 10; // longer labels are cut (the HTML page and index.json have them whole)
const INK = [40, 40, 40] as const;
const GENERATED_INK = [170, 0, 51] as const;

/** The font's pixel size for a cell: labels only when a glyph fits the cell's height. */
function glyphScale(cell: number): number {
  return cell >= 2 * GLYPH_HEIGHT + 2 ? 2 : cell >= GLYPH_HEIGHT + 1 ? 1 : 0;
}

const clip = (text: string) => (text.length > LABEL_CHARS ? text.slice(0, LABEL_CHARS - 1) + '~' : text);

export function heatmapLayout(T: number, labels?: HeatmapLabels): HeatmapLayout {
  const cell = cellSize(T);
  const s = labels ? glyphScale(cell) : 0;
  const longest = s ? Math.max(...labels!.texts.map((t) => clip(t).length)) : 0;
  const margin = s ? longest * (GLYPH_WIDTH + 1) * s + 4 : 0;
  return { cell, x0: margin, y0: margin, width: margin + T * cell, height: margin + T * cell };
}

/**
 * The PNG of one head's T x T attention matrix (`att`, row-major, rows = queries), laid out by
 * heatmapLayout(T, labels). Keys outside a sliding window have probability 0 and are drawn as 0.
 */
export function heatmapPng(att: Float32Array, T: number, labels?: HeatmapLabels): Buffer {
  const { cell, x0, y0, width, height } = heatmapLayout(T, labels);
  const png = new PNG({ width, height, colorType: 2 });
  png.data.fill(255);
  const put = (x: number, y: number, rgb: readonly number[]) => {
    const o = (y * width + x) * 4;
    png.data[o] = rgb[0]!;
    png.data[o + 1] = rgb[1]!;
    png.data[o + 2] = rgb[2]!;
  };
  for (let q = 0; q < T; q++) {
    for (let k = 0; k < T; k++) {
      const rgb = k <= q ? rampColor(att[q * T + k]!) : HIDDEN_RGB;
      for (let y = 0; y < cell; y++) for (let x = 0; x < cell; x++) put(x0 + k * cell + x, y0 + q * cell + y, rgb);
    }
  }
  const s = labels ? glyphScale(cell) : 0;
  if (s) {
    const advance = (GLYPH_WIDTH + 1) * s;
    const inset = (cell - GLYPH_HEIGHT * s) >> 1;
    labels!.texts.forEach((raw, i) => {
      const text = clip(raw);
      const ink = i >= labels!.promptTokens ? GENERATED_INK : INK;
      // Row i: left of the grid, right-aligned, reading left to right.
      const left = x0 - 3 - text.length * advance;
      // Column i: above the grid, starting at its top edge, reading bottom to top (glyphs turned left).
      const bottom = y0 - 3;
      Array.from(text).forEach((c, j) => {
        glyphRows(c).forEach((bits, gy) => {
          for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
            if (!(bits & (1 << (GLYPH_WIDTH - 1 - gx)))) continue;
            for (let dy = 0; dy < s; dy++) {
              for (let dx = 0; dx < s; dx++) {
                put(left + j * advance + gx * s + dx, y0 + i * cell + inset + gy * s + dy, ink);
                put(x0 + i * cell + inset + gy * s + dx, bottom - j * advance - gx * s - dy, ink);
              }
            }
          }
        });
      });
    });
  }
  return PNG.sync.write(png, { colorType: 2 });
}

export interface HeatmapPage {
  title: string;
  /** Token labels, one per position. */
  labels: string[];
  /** Positions from here on were generated (labels shown in italics). */
  promptTokens: number;
  /** Lines shown under the title (model, self-check). */
  notes: string[];
  maps: Array<{ layer: number; head: number; png: Buffer }>;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** One HTML page with every heatmap inlined (data: URIs): it opens anywhere, without the other files. */
export function heatmapHtml(page: HeatmapPage): string {
  const T = page.labels.length;
  const px = 16; // displayed pixels per cell, whatever the PNG's cell size (image-rendering: pixelated)
  const label = (t: string, i: number) =>
    `<span class="${i >= page.promptTokens ? 'gen' : ''}" title="position ${i}">${escapeHtml(t) || '&nbsp;'}</span>`;
  const rows = page.labels.map(label).join('');
  const figures = page.maps
    .map(
      (m) => `<figure><figcaption>layer ${m.layer}, head ${m.head}</figcaption>
<div class="map"><div></div><div class="cols">${rows}</div><div class="rows">${rows}</div>
<img alt="layer ${m.layer} head ${m.head}" width="${T * px}" height="${T * px}" src="data:image/png;base64,${m.png.toString('base64')}"></div></figure>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(page.title)}</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 1.5em; }
.tokens span, .rows span, .cols span { font-family: ui-monospace, monospace; font-size: 11px; white-space: pre; }
.tokens span { border: 1px solid #ccc; margin: 1px; padding: 0 2px; display: inline-block; }
.gen { font-style: italic; color: #a03; }
figure { display: inline-block; margin: 0 2em 2em 0; vertical-align: top; }
.map { display: grid; grid-template-columns: auto ${T * px}px; }
.rows { display: grid; grid-auto-rows: ${px}px; text-align: right; padding-right: 4px; }
.cols { display: flex; align-items: flex-end; }
.cols span { width: ${px}px; max-height: 10em; writing-mode: vertical-rl; transform: rotate(180deg); padding-top: 4px; }
.rows span, .cols span { overflow: hidden; line-height: ${px}px; }
img { image-rendering: pixelated; }
.legend { display: inline-block; width: 200px; height: 12px; vertical-align: middle;
  background: linear-gradient(to right, ${RAMP.map((c) => `rgb(${c.join(',')})`).join(', ')}); }
.hidden { display: inline-block; width: 12px; height: 12px; vertical-align: middle; background: rgb(${HIDDEN_RGB.join(',')}); }
</style></head><body>
<h1>${escapeHtml(page.title)}</h1>
${page.notes.map((n) => `<p>${escapeHtml(n)}</p>`).join('\n')}
<p>Rows are queries, columns are keys; each row is the softmax over the keys that query sees (it sums to 1).
0 <span class="legend"></span> 1 (linear); <span class="hidden"></span> keys after the query; keys outside a sliding window show as 0. Generated tokens are in <span class="gen">italics</span>.</p>
<p class="tokens">${rows}</p>
${figures}
</body></html>
`;
}
