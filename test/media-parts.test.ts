// Image and audio content parts (src/protocol/media-parts.ts): what is taken, what is refused, and
// the size limit counted in decoded bytes. The MQTT codec and the OpenAI endpoint both check with it.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRequest } from '../src/cli/request.js';
import { checkContent, ContentPartError, hasMedia, MEDIA_DEFAULTS, mediaKinds, mediaOf, textMessages, textOf, type MediaLimits } from '../src/protocol/media-parts.js';
import { audioPart, imagePart, PNG_1X1, wavBase64 } from './helpers/media.js';

const IMAGE = imagePart();
const AUDIO = { type: 'input_audio', input_audio: { data: Buffer.alloc(300, 7).toString('base64'), format: 'wav' } };

function refusal(content: unknown, limits: MediaLimits = MEDIA_DEFAULTS): ContentPartError {
  try {
    checkContent(content, 'messages[0]', limits);
  } catch (err) {
    if (err instanceof ContentPartError) return err;
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(content).slice(0, 200)}`);
}

t.test('text parts become one string; image and audio parts are kept as sent', async (t) => {
  t.equal(checkContent([{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }], 'messages[0]'), 'ab');
  t.equal(checkContent('plain', 'messages[0]'), 'plain');
  const parts = [{ type: 'text', text: 'What is this?' }, { ...IMAGE, image_url: { ...IMAGE.image_url, detail: 'low' } }, AUDIO];
  const content = checkContent(parts, 'messages[0]');
  t.same(content, parts, 'the parts, unchanged');
  t.equal(JSON.stringify(content), JSON.stringify(parts), 'byte for byte once serialized');
  const messages = [{ role: 'user', content }];
  t.ok(hasMedia(messages));
  t.equal(textOf(content), 'What is this?');
  t.same(mediaOf(messages), [
    { kind: 'image', type: 'image/png', bytes: Buffer.from(PNG_1X1, 'base64').length },
    { kind: 'audio', type: 'wav', bytes: 300 },
  ], 'kinds, types and decoded sizes, never the data');
  t.equal(mediaKinds(mediaOf(messages)), 'image, audio');
  t.throws(() => textMessages(messages), { code: 'E_BAD_REQUEST', message: /image, audio parts, which the local text models cannot read/ }, 'never handed to a local model');
});

t.test('an oversize part is E_TOO_LARGE naming the part and the limit (decoded bytes)', async (t) => {
  const limits = { ...MEDIA_DEFAULTS, maxPartBytes: 300 };
  t.ok(checkContent([AUDIO], 'messages[0]', limits), 'exactly at the limit');
  const big = { type: 'input_audio', input_audio: { data: Buffer.alloc(301).toString('base64'), format: 'mp3' } };
  const e = refusal([{ type: 'text', text: 'x' }, big], limits);
  t.equal(e.code, 'E_TOO_LARGE');
  t.equal(e.param, 'messages[0].content[1].input_audio.data');
  t.match(e.message, /messages\[0\]\.content\[1\]\.input_audio\.data: the mp3 audio is 301 bytes; the limit is 300 bytes per part \(multimodal\.max_part_bytes\)/);
  const image = refusal([{ type: 'image_url', image_url: { url: `data:image/jpeg;base64,${Buffer.alloc(1000).toString('base64')}` } }], limits);
  t.match(image, { code: 'E_TOO_LARGE', param: 'messages[0].content[0].image_url.url', message: /the image\/jpeg image is 1000 bytes; the limit is 300/ });
});

t.test('a bad data URL is refused with what a good one looks like', async (t) => {
  const url = (u: unknown) => refusal([{ type: 'image_url', image_url: { url: u } }]);
  for (const u of ['data:image/png,rawbytes', 'data:;base64,AAAA', 'file:///etc/passwd', 'iVBORw0KGgo=']) {
    t.match(url(u), { code: 'E_BAD_REQUEST', param: 'messages[0].content[0].image_url.url', message: /is not a base64 data URL: send "data:<image type>;base64,<data>"/ }, u);
  }
  t.match(url('data:image/png;base64,iVBOR w0K'), { message: /is not valid base64/ }, 'a space');
  t.match(url('data:image/png;base64,iVBORw0'), { message: /is not valid base64/ }, 'not a multiple of 4');
  t.match(url('data:image/png;base64,'), { message: /the image\/png image is empty/ });
  t.match(url('data:image/svg+xml;base64,PHN2Zz4='), { message: /has media type image\/svg\+xml; images must be image\/png, image\/jpeg, image\/webp, image\/gif/ });
  t.match(url(42), { message: /must be a data URL such as/ });
  t.match(refusal([{ type: 'image_url', image_url: 'data:image/png;base64,AAAA' }]), { param: 'messages[0].content[0].image_url', message: /must be an object \{"url"/ });
  t.match(refusal([{ type: 'image_url', image_url: { url: IMAGE.image_url.url, detail: 'max' } }]), { param: 'messages[0].content[0].image_url.detail' });
});

t.test('https image URLs: refused unless multimodal.https_image_urls, and then https only, without credentials', async (t) => {
  const part = (u: string) => [{ type: 'image_url', image_url: { url: u } }];
  t.match(refusal(part('https://example.com/cat.png')), { code: 'E_BAD_REQUEST', message: /is a web address; this node takes images as data URLs only \(multimodal\.https_image_urls is off\)/ });
  const on = { ...MEDIA_DEFAULTS, httpsImageUrls: true };
  t.same(checkContent(part('https://example.com/cat.png'), 'messages[0]', on), part('https://example.com/cat.png'));
  t.same(mediaOf([{ content: checkContent(part('https://example.com/cat.png'), 'm', on) }]), [{ kind: 'image', type: 'https' }], 'no size for a URL');
  t.match(refusal(part('http://example.com/cat.png'), on), { message: /must be an https:\/\/ address without credentials/ });
  t.match(refusal(part('https://user:pw@example.com/cat.png'), on), { message: /without credentials/ });
});

t.test('an unknown part type, or an unsupported audio format, names the field and what is taken', async (t) => {
  t.match(refusal([{ type: 'file', file: { file_id: 'f' } }]), {
    code: 'E_BAD_REQUEST',
    param: 'messages[0].content[0].type',
    message: 'messages[0].content[0].type "file" is not supported: content parts are text, image_url (a base64 data URL) and input_audio',
  });
  t.match(refusal([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'ogg' } }]), {
    param: 'messages[0].content[0].input_audio.format',
    message: /input_audio\.format "ogg" is not supported: send the audio as "wav" or "mp3"/,
  });
  t.match(refusal([{ type: 'input_audio', input_audio: { data: 'data:audio/wav;base64,AAAA', format: 'wav' } }]), { message: /not valid base64/ });
  t.match(refusal([{ type: 'text', text: 'x', colour: 'red' }]), { param: 'messages[0].content[0].colour', message: /is a text part and has no field "colour"/ });
  t.match(refusal([['text']]), { param: 'messages[0].content[0]', message: /must be an object/ });
  t.match(refusal(7), { param: 'messages[0].content', message: /must be text or a list of content parts/ });
});

t.test('edgellm request --image / --audio: the -p message becomes text + parts, typed from the extension', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-media-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const png = join(dir, 'belt.PNG');
  const wav = join(dir, 'hum.wav');
  writeFileSync(png, Buffer.from(PNG_1X1, 'base64'));
  writeFileSync(wav, Buffer.from(wavBase64(), 'base64'));
  const flags = { broker: 'mqtt://x', timeout: '1', prefix: 'edgellm', prompt: 'What is this?', id: 'c1' };
  const body = buildRequest({ ...flags, image: [png], audio: [wav], system: 'Be brief.' });
  t.same(body.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'What is this?' }, imagePart(), audioPart()] },
  ]);
  t.equal(checkContent((body.messages as { content: unknown }[])[1]!.content, 'messages[1]') instanceof Array, true, 'parts the node takes');
  t.throws(() => buildRequest({ ...flags, image: [join(dir, 'x.bmp')] }), { code: 'E_BAD_ARGUMENT', message: /--image .*x\.bmp: name a \.png, \.jpg, \.webp or \.gif file/ });
  t.throws(() => buildRequest({ ...flags, audio: [join(dir, 'x.ogg')] }), { code: 'E_BAD_ARGUMENT', message: /name a \.wav or \.mp3 file/ });
  t.throws(() => buildRequest({ ...flags, image: [join(dir, 'missing.png')] }), { code: 'E_BAD_ARGUMENT', message: /--image: cannot read/ });
  t.throws(() => buildRequest({ ...flags, prompt: undefined, messages: '[]', image: [png] }), { code: 'E_BAD_ARGUMENT', message: /go with -p/ });
});
