/**
 * Image and audio parts of a chat message, in OpenAI's content-part shape, checked once for both
 * transports (the MQTT codec and the OpenAI endpoint):
 *
 *   {"type": "text", "text": "What is on this picture?"}
 *   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO...", "detail": "low"}}
 *   {"type": "input_audio", "input_audio": {"data": "UklGR...", "format": "wav"}}
 *
 * The local models read text only, so such parts are never given to them: the router sends the request
 * to the upstream, unchanged, or refuses it (policy/router.ts). Here they are held to their shape (a
 * base64 data URL of an image type, base64 audio in a format upstreams take) and to
 * multimodal.max_part_bytes, counted in decoded bytes. An https:// image URL is forwarded only when
 * multimodal.https_image_urls allows it: this node cannot see its size, and the upstream, not this
 * node, fetches it. A message whose parts are all text becomes one string, as the local engine reads it.
 */
import { EdgeError } from '../errors.js';
import { describeValue as kind } from '../validation.js';

export interface TextPart {
  type: 'text';
  text: string;
}
export interface ImagePart {
  type: 'image_url';
  image_url: { url: string; detail?: 'auto' | 'low' | 'high' };
}
export interface AudioPart {
  type: 'input_audio';
  input_audio: { data: string; format: AudioFormat };
}
export type ContentPart = TextPart | ImagePart | AudioPart;
/** A string, or (only when it holds an image or audio part) the list of parts as sent. */
export type MessageContent = string | ContentPart[];

/** What an audit record and a route reason say about one image or audio part: never its data. */
export interface MediaSummary {
  kind: 'image' | 'audio';
  /** The data URL's media type (image/png), the audio format (wav), or "https" for an image URL. */
  type: string;
  /** Decoded bytes of inline data; absent for an image URL (its size is the upstream's to see). */
  bytes?: number;
}

export interface MediaLimits {
  /** multimodal.max_part_bytes: decoded bytes one image or audio part may carry. */
  maxPartBytes: number;
  /** multimodal.https_image_urls: forward https:// image URLs (fetched by the upstream). */
  httpsImageUrls: boolean;
}

/**
 * 128 KiB decoded: a 640x480 JPEG or about 4 s of 16 kHz 16-bit WAV. Its base64 (171 KiB) fits in the
 * default limits.max_payload_bytes (256 KiB) with room for the rest of the request.
 */
export const MEDIA_DEFAULTS: Readonly<MediaLimits> = Object.freeze({ maxPartBytes: 131072, httpsImageUrls: false });

/** The image types OpenAI-compatible vision models take. */
export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif'] as const;
/** OpenAI's input_audio formats. */
export const AUDIO_FORMATS = ['wav', 'mp3'] as const;
export type AudioFormat = (typeof AUDIO_FORMATS)[number];

const PART_TYPES = 'text, image_url (a base64 data URL) and input_audio';
const DETAILS = new Set(['auto', 'low', 'high']);
/** RFC 2397 with the base64 flag: data:<type>[;param=value]*;base64,<data>. */
const DATA_URL = /^data:([a-z]+\/[a-z0-9.+-]+)((?:;[a-z0-9-]+=[^;,]*)*);base64,/i;
/** Standard base64 alphabet, padded (RFC 4648 section 4); the length is checked apart (a multiple of 4). */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A part that cannot be taken: `param` names it (messages[0].content[1].image_url.url); code E_BAD_REQUEST or E_TOO_LARGE. */
export class ContentPartError extends EdgeError {
  constructor(
    code: 'E_BAD_REQUEST' | 'E_TOO_LARGE',
    message: string,
    readonly param: string,
  ) {
    super(code, message);
    this.name = 'ContentPartError';
  }
}

/**
 * A message's content as checked: a string as it is; a list of parts validated part by part (throws
 * ContentPartError for the first it cannot take), joined into one string when every part is text.
 * `at` is the message's path (messages[0]).
 */
export function checkContent(value: unknown, at: string, limits: Readonly<MediaLimits> = MEDIA_DEFAULTS): MessageContent {
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) {
    throw new ContentPartError('E_BAD_REQUEST', `${at}.content must be text or a list of content parts (${PART_TYPES}), got ${kind(value)}`, `${at}.content`);
  }
  const parts = value.map((part: unknown, j) => checkPart(part, `${at}.content[${j}]`, limits));
  return parts.every((p) => p.type === 'text') ? parts.map((p) => (p as TextPart).text).join('') : parts;
}

function checkPart(part: unknown, where: string, limits: Readonly<MediaLimits>): ContentPart {
  if (!isObject(part)) throw bad(`${where} must be an object such as {"type": "text", "text": "..."}, got ${kind(part)}`, where);
  const fields = (type: string, ...keys: string[]) => {
    for (const k of Object.keys(part)) if (k !== 'type' && !keys.includes(k)) throw bad(`${where} is a ${type} part and has no field "${k}"`, `${where}.${k}`);
  };
  switch (part.type) {
    case 'text':
      fields('text', 'text');
      if (typeof part.text !== 'string') throw bad(`${where}.text must be text, got ${kind(part.text)}`, `${where}.text`);
      return { type: 'text', text: part.text };
    case 'image_url': {
      fields('image_url', 'image_url');
      const img = part.image_url;
      if (!isObject(img)) throw bad(`${where}.image_url must be an object {"url": "data:image/png;base64,..."}, got ${kind(img)}`, `${where}.image_url`);
      for (const k of Object.keys(img)) if (k !== 'url' && k !== 'detail') throw bad(`${where}.image_url has no field "${k}" (it takes url and detail)`, `${where}.image_url.${k}`);
      if (img.detail !== undefined && !DETAILS.has(img.detail as string)) {
        throw bad(`${where}.image_url.detail must be "auto", "low" or "high", got ${kind(img.detail)}`, `${where}.image_url.detail`);
      }
      checkImageUrl(img.url, `${where}.image_url.url`, limits);
      return { type: 'image_url', image_url: { url: img.url as string, ...(img.detail !== undefined ? { detail: img.detail as 'auto' | 'low' | 'high' } : {}) } };
    }
    case 'input_audio': {
      fields('input_audio', 'input_audio');
      const audio = part.input_audio;
      const param = `${where}.input_audio`;
      if (!isObject(audio)) throw bad(`${param} must be an object {"data": "<base64>", "format": "wav"}, got ${kind(audio)}`, param);
      for (const k of Object.keys(audio)) if (k !== 'data' && k !== 'format') throw bad(`${param} has no field "${k}" (it takes data and format)`, `${param}.${k}`);
      if (!(AUDIO_FORMATS as readonly unknown[]).includes(audio.format)) {
        throw bad(`${param}.format ${kind(audio.format)} is not supported: send the audio as ${AUDIO_FORMATS.map((f) => `"${f}"`).join(' or ')} (the formats OpenAI-compatible upstreams take)`, `${param}.format`);
      }
      if (typeof audio.data !== 'string') throw bad(`${param}.data must be base64 text (the audio file's bytes, not a data URL), got ${kind(audio.data)}`, `${param}.data`);
      checkBase64(audio.data, 0, `${param}.data`, `${audio.format as string} audio`, limits);
      return { type: 'input_audio', input_audio: { data: audio.data, format: audio.format as AudioFormat } };
    }
    default:
      throw bad(`${where}.type ${kind(part.type)} is not supported: content parts are ${PART_TYPES}`, `${where}.type`);
  }
}

function checkImageUrl(url: unknown, param: string, limits: Readonly<MediaLimits>): void {
  if (typeof url !== 'string' || url === '') throw bad(`${param} must be a data URL such as "data:image/png;base64,iVBOR...", got ${kind(url)}`, param);
  if (/^https?:/i.test(url)) {
    const advice = 'embed the image as a base64 data URL ("data:image/png;base64,...")';
    if (!limits.httpsImageUrls) throw bad(`${param} is a web address; this node takes images as data URLs only (multimodal.https_image_urls is off): ${advice}`, param);
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      // reported below
    }
    if (parsed?.protocol !== 'https:' || parsed.username !== '' || parsed.password !== '') {
      throw bad(`${param} must be an https:// address without credentials, or ${advice}`, param);
    }
    return;
  }
  const m = DATA_URL.exec(url);
  if (m === null) {
    // Not quoted back: the refusal goes to the log and the audit, which never hold a part's data.
    throw bad(`${param} is not a base64 data URL: send "data:<image type>;base64,<data>", e.g. "data:image/png;base64,iVBOR..."`, param);
  }
  const type = m[1]!.toLowerCase();
  if (!(IMAGE_TYPES as readonly string[]).includes(type)) {
    throw bad(`${param} has media type ${type}; images must be ${IMAGE_TYPES.join(', ')}`, param);
  }
  checkBase64(url, m[0].length, param, `${type} image`, limits);
}

/** The base64 text from `start` on is well formed and decodes to at most the part limit. */
function checkBase64(s: string, start: number, param: string, what: string, limits: Readonly<MediaLimits>): void {
  const len = s.length - start;
  const bytes = decodedBytes(s, start);
  // The size first: a huge part is refused on its length, before the alphabet is scanned.
  if (bytes > limits.maxPartBytes) {
    throw new ContentPartError(
      'E_TOO_LARGE',
      `${param}: the ${what} is ${bytes} bytes; the limit is ${limits.maxPartBytes} bytes per part (multimodal.max_part_bytes): send a smaller or more compressed one`,
      param,
    );
  }
  if (len === 0) throw bad(`${param}: the ${what} is empty`, param);
  if (len % 4 !== 0 || !BASE64.test(start === 0 ? s : s.slice(start))) {
    throw bad(`${param}: the ${what} is not valid base64 (standard alphabet A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters, no spaces)`, param);
  }
}

/** Bytes that `len` characters of padded base64 decode to. */
function decodedBytes(s: string, start: number): number {
  const len = s.length - start;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  return Math.max(0, Math.floor(len / 4) * 3 - (len % 4 === 0 ? pad : 0));
}

/** Why a request cannot have both: an adapter runs on the local text model, which never reads image or audio parts. */
export const ADAPTER_WITH_MEDIA =
  'a LoRA adapter runs on the local text model, and a request with image or audio parts is answered by the upstream: drop the adapter, or send the text without the parts';

/** Whether any message carries an image or audio part. */
export function hasMedia(messages: readonly { content: MessageContent }[] | undefined): boolean {
  return (messages ?? []).some((m) => typeof m.content !== 'string');
}

/** The text a message's content holds (its text parts, joined): what prompt sizes and token counts read. */
export function textOf(content: MessageContent): string {
  return typeof content === 'string' ? content : content.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

/** Every image and audio part, in order: kind, type and decoded size, never the data. */
export function mediaOf(messages: readonly { content: MessageContent }[] | undefined): MediaSummary[] {
  const out: MediaSummary[] = [];
  for (const m of messages ?? []) {
    if (typeof m.content === 'string') continue;
    for (const p of m.content) {
      if (p.type === 'image_url') {
        const data = DATA_URL.exec(p.image_url.url);
        out.push(data ? { kind: 'image', type: data[1]!.toLowerCase(), bytes: decodedBytes(p.image_url.url, data[0].length) } : { kind: 'image', type: 'https' });
      } else if (p.type === 'input_audio') {
        out.push({ kind: 'audio', type: p.input_audio.format, bytes: decodedBytes(p.input_audio.data, 0) });
      }
    }
  }
  return out;
}

/** "image" / "image, audio": the kinds of parts a request has, for route reasons and refusals. */
export function mediaKinds(media: readonly MediaSummary[]): string {
  return [...new Set(media.map((m) => m.kind))].join(', ');
}

/**
 * The messages for a local text model: every content a string. Image and audio parts never reach a
 * local model (the router sends them upstream); meeting one here is a routing bug, refused rather than dropped.
 */
export function textMessages(messages: readonly { role: string; content: MessageContent }[]): { role: string; content: string }[] {
  return messages.map((m, i) => {
    if (typeof m.content !== 'string') {
      throw new EdgeError('E_BAD_REQUEST', `messages[${i}] has ${mediaKinds(mediaOf([m]))} parts, which the local text models cannot read: such requests go to the upstream`);
    }
    return { role: m.role, content: m.content };
  });
}

const bad = (message: string, param: string) => new ContentPartError('E_BAD_REQUEST', message, param);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
