// Image and audio parts, end to end: a real mosquitto, the daemon with the fake (text) engine, and the
// stub OpenAI-compatible upstream of the hybrid-routing tests (test/helpers/policy-fakes.ts), which keeps
// every request body as it arrived. Parts go to the upstream unchanged, byte for byte, on the MQTT path
// and through the OpenAI endpoint (with the official `openai` client); they never reach the local model,
// never come from (or go into) the answer cache, and are refused before anything leaves the node when
// the request or the policy keeps it local or there is no upstream.
import t from 'tap';
import OpenAI from 'openai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestAudit } from '../../src/policy/audit.js';
import type { SqliteAuditLog } from '../../src/store/audit.js';
import { Broker, freePort, mosquittoFor } from '../helpers/broker.js';
import { daemonConfig, startDaemon } from '../helpers/daemon.js';
import { Device } from '../helpers/device.js';
import { audioPart, imagePart, PNG_1X1, wavBase64 } from '../helpers/media.js';
import { postJson } from '../helpers/openai-client.js';
import { CLOUD_CHUNKS, CLOUD_TEXT, startFakeUpstream, TEST_ROLES, type UpstreamMode } from '../helpers/policy-fakes.js';
import type { TapTest } from '../fixtures/paths.js';

const bin = mosquittoFor('the multimodal tests');

/** A question with an image and a sound: what a camera-and-microphone device sends. */
const QUESTION = 'What is in the picture, and what is the sound?';
const PARTS = [{ type: 'text' as const, text: QUESTION }, imagePart(), audioPart()];
const WAV_BYTES = Buffer.from(wavBase64(), 'base64').length;
const PNG_BYTES = Buffer.from(PNG_1X1, 'base64').length;
const MEDIA = [
  { kind: 'image', type: 'image/png', bytes: PNG_BYTES },
  { kind: 'audio', type: 'wav', bytes: WAV_BYTES },
];

if (bin) {
  let broker: Broker;
  let n = 0;
  const work = mkdtempSync(join(tmpdir(), 'edgellm-multimodal-'));
  t.before(async () => {
    broker = await Broker.start(bin);
  });
  t.teardown(async () => {
    await broker.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  const ROLES = TEST_ROLES;

  async function setup(t: TapTest, opts: { upstream?: boolean; mode?: UpstreamMode; over?: Record<string, unknown> } = {}) {
    n++;
    const prefix = `mm${n}`;
    const fake = await startFakeUpstream(opts.mode ?? 'normal');
    t.teardown(() => fake.close());
    const openaiPort = await freePort();
    const config = daemonConfig({
      broker: { url: broker.url },
      prefix,
      node_id: `node${n}`,
      state_dir: join(work, prefix),
      ...(opts.upstream === false
        ? {}
        : { upstream: { url: fake.url, model: 'vision-model', timeouts: { connect_ms: 300, first_byte_ms: 1000, idle_ms: 1000, total_ms: 3000 } } }),
      access: { roles: ROLES, devices: { 'cam-*': 'hybrid', 'vault-1': 'private', 'openai-api': 'hybrid' }, default_role: 'local' },
      openai: { port: openaiPort },
      ...opts.over,
    });
    const daemon = await startDaemon(config);
    t.teardown(() => daemon.service.stop());
    const device = await Device.connect(broker.url, `client-${prefix}`, [`${prefix}/response/#`]);
    t.teardown(() => device.close());
    const ask = (dev: string, body: object) => device.publish(`${prefix}/request/${dev}`, body);
    const final = async (dev: string, id: string) =>
      (await device.waitFor((r) => r.topic === `${prefix}/response/${dev}` && r.body.id === id && (r.body.type === 'done' || r.body.type === 'error'), 5000, `the final reply to ${dev}/${id}`))
        .body as Record<string, any>;
    const log = daemon.service.audit as unknown as SqliteAuditLog;
    const audited = (dev: string) => log.query({ type: 'request' }).map((e) => e.record as RequestAudit).filter((r) => r.device === dev);
    const rawAudit = () => JSON.stringify(log.query({ type: 'request' }).map((e) => e.record));
    const api = `http://127.0.0.1:${openaiPort}/v1`;
    return { config, daemon, device, prefix, fake, ask, final, audited, rawAudit, api, localCalls: () => daemon.models.reduce((s, m) => s + m.calls, 0) };
  }

  t.test('MQTT: image and audio parts go to the upstream unchanged, byte for byte, and never to the local model', async (t) => {
    const { ask, final, fake, audited, rawAudit, localCalls } = await setup(t);
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: PARTS }];
    await ask('cam-1', { id: 'mm', messages, stream: true, max_tokens: 64 });
    const done = await final('cam-1', 'mm');
    t.match(done, { type: 'done', route: 'cloud', route_reason: 'multimodal input (image, audio); local model fake reads text only', text: CLOUD_TEXT, cached: false });
    t.equal(fake.requests, 1);
    t.same((fake.bodies[0] as { messages: unknown }).messages, messages, 'the messages as the device sent them');
    t.ok(fake.raw[0]!.includes(JSON.stringify(PARTS)), 'the parts byte for byte in the body the upstream read');
    t.equal(localCalls(), 0, 'the local text model never saw them');
    const [record] = audited('cam-1');
    t.match(record, { id: 'mm', allowed: true, route: 'cloud', route_reason: /^multimodal input/, outcome: 'ok', media: MEDIA });
    t.notOk(rawAudit().includes(PNG_1X1.slice(0, 40)), 'the audit keeps kinds and sizes, never the image data');
    t.notOk(rawAudit().includes(wavBase64().slice(0, 60)), 'nor the audio data');
  });

  t.test("the upstream call joins the request's trace: traceparent with this node's span as the parent (MQTT and OpenAI)", async (t) => {
    const { device, prefix, fake, api } = await setup(t);
    const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
    const CALLER = '00f067aa0ba902b7';
    const W3C = new RegExp(`^00-${TRACE}-([0-9a-f]{16})-01$`);
    await device.publish(`${prefix}/request/cam-1`, { id: 'tp', messages: [{ role: 'user', content: PARTS }] }, { userProperties: { traceparent: `00-${TRACE}-${CALLER}-01` } });
    const done = await device.waitFor((r) => r.topic === `${prefix}/response/cam-1` && r.body.id === 'tp' && r.body.type === 'done', 5000, 'the done reply to cam-1/tp');
    const sent = String(fake.headers[0]!.traceparent);
    t.match(sent, W3C, 'the upstream got the trace id, flags kept');
    t.not(sent.split('-')[2], CALLER, "its parent is this node's span, not the device's");
    t.equal(sent, done.userProperties?.traceparent, 'the same span the reply names');

    const res = await fetch(`${api}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${TRACE}-${CALLER}-01` },
      body: JSON.stringify({ messages: [{ role: 'user', content: PARTS }] }),
    });
    t.equal(res.status, 200);
    await res.json();
    const relayed = String(fake.headers[1]!.traceparent);
    t.match(relayed, W3C, 'the OpenAI relay sends it too');
    t.equal(relayed, res.headers.get('traceparent'), "the span of the endpoint's reply header");
  });

  t.test('an A/B name: the request runs as its variant and goes upstream, the variant in the reply and the audit (MQTT and OpenAI)', async (t) => {
    const variants = { assistant: [{ model: 'fake', weight: 1 }, { model: 'vision-model', weight: 1 }] };
    const { ask, final, fake, api, audited } = await setup(t, { over: { variants } });
    const messages = [{ role: 'user', content: PARTS }];
    await ask('cam-1', { id: 'ab', model: 'assistant', variant: 'fake', messages });
    t.match(await final('cam-1', 'ab'), { type: 'done', route: 'cloud', variant: 'fake', text: CLOUD_TEXT });
    t.match(audited('cam-1').find((r) => r.id === 'ab'), { route: 'cloud', variant: 'fake', variant_of: 'assistant', outcome: 'ok' });

    const res = await postJson(`${api}/chat/completions`, { model: 'assistant', variant: 'fake', messages });
    t.equal(res.status, 200, 'not E_UNKNOWN_MODEL: the A/B name is resolved before the parts go upstream');
    t.match(res.body, { model: 'vision-model', variant: 'fake', choices: [{ message: { content: CLOUD_TEXT } }] });
    await new Promise((r) => setTimeout(r, 100)); // the audit record is written once the relay settles
    t.match(audited('openai-api').at(-1), { route: 'cloud', variant: 'fake', variant_of: 'assistant', outcome: 'ok' });
    t.equal(fake.requests, 2);

    const bad = await postJson(`${api}/chat/completions`, { model: 'assistant', variant: 'nope', messages });
    t.match(bad.body, { error: { code: 'variant_not_found' } }, 'an unknown variant is refused as for text');
    t.equal(fake.requests, 2, 'and nothing went upstream');
  });

  t.test('MQTT: the answer cache never answers a multimodal request with a text-only answer', async (t) => {
    const { ask, final, fake, localCalls } = await setup(t);
    const text = QUESTION;
    await ask('cam-1', { id: 't1', messages: [{ role: 'user', content: text }], temperature: 0 });
    t.match(await final('cam-1', 't1'), { route: 'local', cached: false });
    await ask('cam-1', { id: 't2', messages: [{ role: 'user', content: text }], temperature: 0 });
    t.match(await final('cam-1', 't2'), { route: 'local', cached: true }, 'the text-only question is cached');
    await ask('cam-1', { id: 'm1', messages: [{ role: 'user', content: [{ type: 'text', text }, imagePart()] }], temperature: 0 });
    t.match(await final('cam-1', 'm1'), { route: 'cloud', cached: false, text: CLOUD_TEXT }, 'the same text with an image is not the cached text answer');
    await ask('cam-1', { id: 'm2', messages: [{ role: 'user', content: [{ type: 'text', text }, imagePart()] }], temperature: 0 });
    t.match(await final('cam-1', 'm2'), { route: 'cloud', cached: false }, 'nor is a repeated multimodal request cached');
    t.equal(fake.requests, 2);
    t.equal(localCalls(), 1, 'only the first text-only question ran locally');
  });

  t.test('MQTT: local_only, a local_only role or a role without the cloud route refuse before anything leaves the node', async (t) => {
    const { ask, final, fake, audited } = await setup(t);
    const image = [{ role: 'user', content: [{ type: 'text', text: 'what is this?' }, imagePart()] }];
    await ask('cam-1', { id: 'lo', messages: image, local_only: true });
    t.match(await final('cam-1', 'lo'), { type: 'error', error: { code: 'E_BAD_REQUEST', message: /image parts, which only the upstream reads .* local_only keeps it on this node: drop local_only/ } });
    await ask('vault-1', { id: 'v', messages: image });
    t.match(await final('vault-1', 'v'), { type: 'error', error: { code: 'E_NO_ROUTE', message: /the device's role is local_only: ask an operator for a role with the cloud route/ } });
    await ask('press-1', { id: 'p', messages: image });
    t.match(await final('press-1', 'p'), { type: 'error', error: { code: 'E_NO_ROUTE', message: /cloud not allowed for this device: ask an operator .*edgellm grant/ } });
    await ask('cam-1', { id: 'l', messages: image, route: 'local' });
    t.match(await final('cam-1', 'l'), { type: 'error', error: { code: 'E_BAD_REQUEST', message: /route "local" was asked for/ } });
    t.equal(fake.requests, 0, 'nothing reached the upstream');
    t.match(audited('vault-1'), [{ id: 'v', allowed: false, denied: { code: 'E_NO_ROUTE' }, media: [{ kind: 'image', type: 'image/png', bytes: PNG_BYTES }] }], 'refusals are audited with the parts');
  });

  t.test('MQTT: without an upstream, E_NO_ROUTE says what to configure', async (t) => {
    const { ask, final, localCalls } = await setup(t, { upstream: false });
    await ask('cam-1', { id: 'nu', messages: [{ role: 'user', content: [audioPart()] }] });
    t.match(await final('cam-1', 'nu'), { type: 'error', error: { code: 'E_NO_ROUTE', message: /audio parts, which only the upstream reads .*but no upstream configured: set upstream\.url and upstream\.model/ } });
    t.equal(localCalls(), 0);
  });

  t.test('MQTT: an upstream failure is E_UPSTREAM, never a local answer that did not see the parts', async (t) => {
    const { ask, final, fake, localCalls } = await setup(t, { mode: '500' });
    await ask('cam-1', { id: 'f', messages: [{ role: 'user', content: PARTS }] });
    t.match(await final('cam-1', 'f'), { type: 'error', error: { code: 'E_UPSTREAM', message: /HTTP 500.*it cannot be answered locally \(multimodal input/ } });
    t.equal(fake.requests, 1);
    t.equal(localCalls(), 0);
  });

  t.test('MQTT: bad parts are refused with the part, the rule and the limit named', async (t) => {
    const { ask, final, fake, rawAudit } = await setup(t, { over: { multimodal: { max_part_bytes: 1000 } } });
    const cases: Array<[string, object, string, RegExp]> = [
      ['oversize', audioPart(), 'E_TOO_LARGE', /messages\[0\]\.content\[0\]\.input_audio\.data: the wav audio is \d+ bytes; the limit is 1000 bytes per part \(multimodal\.max_part_bytes\)/],
      ['bad-url', { type: 'image_url', image_url: { url: 'data:image/png,not-base64' } }, 'E_BAD_REQUEST', /is not a base64 data URL/],
      ['unknown', { type: 'video_url', video_url: { url: 'data:video/mp4;base64,AAAA' } }, 'E_BAD_REQUEST', /"video_url" is not supported/],
      ['format', audioPart('AAAA', 'ogg' as 'wav'), 'E_BAD_REQUEST', /format "ogg" is not supported: send the audio as "wav" or "mp3"/],
    ];
    for (const [id, part, code, message] of cases) {
      await ask('cam-1', { id, messages: [{ role: 'user', content: [part] }] });
      t.match(await final('cam-1', id), { type: 'error', error: { code, message } }, id);
    }
    t.equal(fake.requests, 0);
    t.notOk(rawAudit().includes('not-base64'), 'a refusal does not quote the part it refuses');
  });

  t.test('OpenAI endpoint: the official client sends parts that reach the upstream unchanged, streamed or not', async (t) => {
    const { fake, api, audited, localCalls } = await setup(t);
    const client = new OpenAI({ baseURL: api, apiKey: 'unused', maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: PARTS }];
    const completion = await client.chat.completions.create({ model: 'vision-model', messages, max_tokens: 32 });
    t.equal(completion.choices[0]!.message.content, CLOUD_TEXT);
    t.equal(completion.model, 'vision-model');
    t.same((fake.bodies[0] as { messages: unknown }).messages, messages);
    t.ok(fake.raw[0]!.includes(JSON.stringify(PARTS)), 'byte for byte');
    t.equal(fake.headers[0]!['x-edgellm-forwarded'], '1', 'marked as forwarded by an edgellm node');

    const stream = await client.chat.completions.create({ model: 'fake', messages, stream: true });
    const pieces: string[] = [];
    for await (const chunk of stream) if (chunk.choices[0]?.delta.content) pieces.push(chunk.choices[0].delta.content);
    t.same(pieces, CLOUD_CHUNKS, 'relayed chunk by chunk, even when the local model is named');
    t.ok(fake.raw[1]!.includes(JSON.stringify(PARTS)));
    t.equal(localCalls(), 0);
    t.match(audited('openai-api'), [
      { allowed: true, route: 'cloud', route_reason: /^multimodal input \(image, audio\)/, outcome: 'ok', media: MEDIA },
      { allowed: true, route: 'cloud', outcome: 'ok', media: MEDIA },
    ]);
  });

  t.test('OpenAI endpoint: refusals are 400s naming the code and what to do; nothing leaves the node', async (t) => {
    const { fake, api } = await setup(t, { over: { access: { roles: ROLES, default_role: 'local' }, multimodal: { max_part_bytes: 1000 } } });
    const image = [{ role: 'user', content: [imagePart()] }];
    const forbidden = await postJson(`${api}/chat/completions`, { messages: image });
    t.match(forbidden, { status: 400, body: { error: { code: 'E_NO_ROUTE', message: /cloud not allowed for this device/ } } }, 'openai-api has no cloud role here');
    const big = await postJson(`${api}/chat/completions`, { messages: [{ role: 'user', content: [audioPart()] }] });
    t.match(big, { status: 400, body: { error: { code: 'E_TOO_LARGE', param: 'messages[0].content[0].input_audio.data', message: /limit is 1000 bytes per part/ } } });
    const logprobs = await postJson(`${api}/chat/completions`, { messages: image, logprobs: true });
    t.match(logprobs, { status: 400, body: { error: { param: 'logprobs' } } });
    t.equal(fake.requests, 0);
  });

  t.test('OpenAI endpoint: no upstream, or a request another edgellm node forwarded, is E_NO_ROUTE', async (t) => {
    const { api } = await setup(t, { upstream: false });
    const noUpstream = await postJson(`${api}/chat/completions`, { messages: [{ role: 'user', content: [imagePart()] }] });
    t.match(noUpstream, { status: 400, body: { error: { code: 'E_NO_ROUTE', message: /no upstream configured: set upstream\.url and upstream\.model/ } } });
    const res = await fetch(`${api}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-edgellm-forwarded': '1' },
      body: JSON.stringify({ messages: [{ role: 'user', content: [imagePart()] }] }),
    });
    t.equal(res.status, 400);
    t.match(await res.json(), { error: { code: 'E_NO_ROUTE', message: /forwarded by another edgellm node/ } });
  });
}
