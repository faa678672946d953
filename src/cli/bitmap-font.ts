/**
 * A 5 x 7 pixel bitmap font for printable ASCII (32..126), drawn for this project: the token labels
 * of `edgellm trace`'s heatmaps, so a PNG carries its labels without a font file or a renderer.
 *
 * GLYPHS holds 7 characters per glyph, in code point order from the space: one base-32 digit
 * (0-9, a-v) per pixel row, top to bottom, whose 5 bits are the row's pixels, the high bit leftmost.
 */
const GLYPHS =
  '00000004444404aaa0000aavavaa4fke5u4op248j3cik8lid448000024888428422248' +
  '04lel40044v4400000c48000v00000000cc01248g0ehjlphe4c4444eeh1248vv2421he' +
  '26aiv22vgu11he68guhhev124888ehhehheehhf12c0cc0cc00cc0c48248g84200v0v00' +
  '8421248eh12404eh1dlleehhvhhhuhhuhhuehggghesihhhisvgguggvvggugggehgnhhf' +
  'hhhvhhhe44444e72222ichikokihggggggvhrllhhhhhpljhhehhhhheuhhugggehhhlid' +
  'uhhukihfgge11uv444444hhhhhhehhhhha4hhhlllahha4ahhhha4444v1248gve88888e' +
  '0g84210e22222e4ah0000000000v842000000e1fhfggmphhu00egghe11djhhf00ehvge' +
  '698s8880fhhf1eggmphhh40c444e20622icggikokic44444e00qllhh00mphhh00ehhhe' +
  '00uhugg00djf1100mpggg00ege1u88s889600hhhjd00hhha400hhlla00ha4ah00hhf1e' +
  '00v248v244844244444448442448008l200';

export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 7;

/** The glyph of character c as 7 row masks (bit 4 = leftmost pixel); '?' for anything not printable ASCII. */
export function glyphRows(c: string): number[] {
  let code = c.charCodeAt(0);
  if (!(code >= 32 && code <= 126)) code = 63;
  const at = (code - 32) * GLYPH_HEIGHT;
  return Array.from(GLYPHS.slice(at, at + GLYPH_HEIGHT), (d) => parseInt(d, 32));
}
