/**
 * `edgellm request -p TEXT`: a command-line factory device for trying a node. Publishes one request
 * (QoS 1) to <prefix>/request/<device> on the broker (default: the embedded broker `edgellm serve`
 * runs on 127.0.0.1:1883), prints the answer's text (as it arrives with --stream, or the final reply
 * as JSON with --json) and exits 0. An error reply is printed as `edgellm: E_CODE: message` on stderr
 * with a non-zero exit, as are an unreachable broker (E_BROKER) and no answer in time (E_TIMEOUT).
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { EdgeError, type ErrorCode } from '../errors.js';
import { urlUsername } from '../net.js';
import { askOverMqtt, type DeviceConnection } from '../transport/mqtt/device-client.js';
import { DEFAULT_REQUEST_BROKER } from '../transport/mqtt/embedded-broker.js';
import { parsePositiveNumber } from './args.js';
import { collect, MAX_TOKENS_FLAGS } from './generate.js';
import { withExamples } from './help.js';
import { Interrupted, interruptSignal } from './interrupt.js';

interface RequestFlags {
  prompt?: string;
  messages?: string;
  system?: string;
  broker: string;
  device?: string;
  id?: string;
  model?: string;
  class?: string;
  maxTokens?: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  seed?: string;
  stop?: string[];
  /** Files sent as image_url / input_audio parts of the -p message (the node routes them upstream). */
  image?: string[];
  audio?: string[];
  route?: string;
  priority?: string;
  stream?: boolean;
  timeout: string;
  json?: boolean;
  prefix: string;
  username?: string;
  passwordFile?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  insecure?: boolean;
}

/**
 * A number flag as the request carries it. Only the form is checked here: the node checks the range
 * (max_tokens -1 is its E_BAD_REQUEST), so this command shows exactly what a device would get.
 */
function numberFlag(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new EdgeError('E_BAD_ARGUMENT', `${flag} takes a number, got "${value}"`);
  return n;
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new EdgeError('E_BAD_ARGUMENT', `${flag}: cannot read ${file}: ${(err as Error).message}`);
  }
}

/** Image types by file extension (what the node takes: docs/protocol.md, Images and audio). */
const IMAGE_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp', gif: 'image/gif' };
const AUDIO_FORMATS = ['wav', 'mp3'];

/** --image and --audio files as content parts, in the order given (images first). */
function mediaParts(flags: Pick<RequestFlags, 'image' | 'audio'>): object[] {
  const ext = (file: string) => /\.([^./]+)$/.exec(file)?.[1]?.toLowerCase() ?? '';
  const images = (flags.image ?? []).map((file) => {
    const type = IMAGE_TYPES[ext(file)];
    if (type === undefined) throw new EdgeError('E_BAD_ARGUMENT', `--image ${file}: name a .png, .jpg, .webp or .gif file (the type comes from the extension)`);
    return { type: 'image_url', image_url: { url: `data:${type};base64,${readFlagFile('--image', file).toString('base64')}` } };
  });
  const audio = (flags.audio ?? []).map((file) => {
    const format = ext(file);
    if (!AUDIO_FORMATS.includes(format)) throw new EdgeError('E_BAD_ARGUMENT', `--audio ${file}: name a .wav or .mp3 file (the format comes from the extension)`);
    return { type: 'input_audio', input_audio: { data: readFlagFile('--audio', file).toString('base64'), format } };
  });
  return [...images, ...audio];
}

/** The request's fields from the flags (id first, as the protocol's examples write it). */
export function buildRequest(flags: RequestFlags): Record<string, unknown> & { id: string } {
  const id = flags.id ?? `cli-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const body: Record<string, unknown> & { id: string } = { id };
  const media = mediaParts(flags);
  if (flags.messages !== undefined) {
    if (flags.prompt !== undefined || flags.system !== undefined) {
      throw new EdgeError('E_BAD_ARGUMENT', '--messages is the whole chat: use it without -p and --system');
    }
    if (media.length > 0) throw new EdgeError('E_BAD_ARGUMENT', '--image and --audio go with -p: with --messages, put the parts in its JSON');
    try {
      body.messages = JSON.parse(flags.messages) as unknown;
    } catch {
      throw new EdgeError('E_BAD_ARGUMENT', `--messages takes a JSON list such as '[{"role":"user","content":"Hi"}]', got ${JSON.stringify(flags.messages)}`);
    }
  } else if (flags.prompt === undefined) {
    throw new EdgeError('E_BAD_ARGUMENT', 'say what to ask: -p TEXT (or --messages JSON)');
  } else if (flags.system !== undefined || media.length > 0) {
    body.messages = [
      ...(flags.system !== undefined ? [{ role: 'system', content: flags.system }] : []),
      { role: 'user', content: media.length > 0 ? [{ type: 'text', text: flags.prompt }, ...media] : flags.prompt },
    ];
  } else {
    body.prompt = flags.prompt;
  }
  if (flags.model !== undefined && flags.class !== undefined) {
    throw new EdgeError('E_BAD_ARGUMENT', '--class names a model class (policy.classes), which stands for a model: use --model or --class, not both');
  }
  // A class travels as the request's model: the node maps it (policy.classes) to a local model or the upstream.
  const model = flags.model ?? flags.class;
  if (model !== undefined) body.model = model;
  if (flags.maxTokens !== undefined) body.max_tokens = numberFlag('--max-tokens', flags.maxTokens);
  if (flags.temperature !== undefined) body.temperature = numberFlag('--temperature', flags.temperature);
  if (flags.topP !== undefined) body.top_p = numberFlag('--top-p', flags.topP);
  if (flags.topK !== undefined) body.top_k = numberFlag('--top-k', flags.topK);
  if (flags.seed !== undefined) body.seed = numberFlag('--seed', flags.seed);
  if (flags.stop !== undefined) body.stop = flags.stop;
  if (flags.route !== undefined) body.route = flags.route;
  if (flags.priority !== undefined) body.priority = numberFlag('--priority', flags.priority);
  if (flags.stream) body.stream = true;
  return body;
}

function connection(flags: RequestFlags): DeviceConnection {
  const c: DeviceConnection = { url: flags.broker };
  if (flags.username !== undefined) c.username = flags.username;
  if (flags.passwordFile !== undefined && flags.username === undefined && urlUsername(flags.broker) === '') {
    throw new EdgeError('E_BAD_ARGUMENT', '--password-file needs --username (or a user in --broker): an MQTT broker takes a password only with a user name');
  }
  if (flags.passwordFile !== undefined) c.password = readFlagFile('--password-file', flags.passwordFile).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (flags.caFile !== undefined) c.ca = readFlagFile('--ca-file', flags.caFile);
  if (flags.certFile !== undefined) c.cert = readFlagFile('--cert-file', flags.certFile);
  if (flags.keyFile !== undefined) c.key = readFlagFile('--key-file', flags.keyFile);
  if (flags.insecure) c.rejectUnauthorized = false;
  return c;
}

/** This machine's name as one topic level. */
const defaultDevice = () => `cli-${hostname().replace(/[^A-Za-z0-9_.-]+/g, '-') || 'host'}`;

export function registerRequest(program: Command): void {
  const cmd = program
    .command('request')
    .description('ask a node over MQTT as a device would, and print the answer (try the daemon: `edgellm request -p "Hello"`)')
    .option('-p, --prompt <text>', 'text to continue')
    .option('--system <text>', 'with -p: send a chat of this system message and -p as the user\'s')
    .option('--messages <json>', 'the whole chat as JSON: \'[{"role":"user","content":"Hi"}]\'')
    .option('--broker <url>', 'MQTT broker (mqtt://, mqtts://, ws://, wss://)', DEFAULT_REQUEST_BROKER)
    .option('--prefix <prefix>', 'the node\'s topic prefix (its config key prefix)', 'edgellm')
    .option('--device <id>', 'this device\'s id, one topic level (default: cli-<host name>)')
    .option('--id <id>', 'request id (default: a fresh one); a repeated id gets the stored answer')
    .option('--model <name>', 'model name (file name without .gguf; default: the node\'s first)')
    .option('--class <name>', 'model class of the node\'s policy.classes (real-time, batch, ...) instead of a model')
    .option(MAX_TOKENS_FLAGS, 'most tokens to generate')
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (and cacheable)')
    .option('--top-p <p>', 'nucleus sampling threshold')
    .option('--top-k <k>', 'keep the k most likely tokens')
    .option('--seed <n>', 'sampling seed (repeatable and cacheable)')
    .option('--stop <text>', 'stop before this text (repeat for more)', collect)
    .option('--image <file>', 'send this .png/.jpg/.webp/.gif with -p (repeat for more); the node sends it to its upstream', collect)
    .option('--audio <file>', 'send this .wav/.mp3 with -p (repeat for more); the node sends it to its upstream', collect)
    .option('--route <route>', 'auto, local or cloud')
    .option('--priority <n>', '0 (lowest) to 9, default 5')
    .option('--stream', 'print the text as it is generated')
    .option('--timeout <seconds>', 'give up (and cancel the request) after this long', '120')
    .option('--json', 'print the final reply message as JSON')
    .option('--username <name>', 'user name for the broker')
    .option('--password-file <file>', 'file holding the broker password (first line)')
    .option('--ca-file <file>', 'PEM CA for an mqtts:// broker')
    .option('--cert-file <file>', 'PEM client certificate')
    .option('--key-file <file>', 'PEM key of --cert-file')
    .option('--insecure', 'accept a broker certificate that does not verify')
    .action(async (flags: RequestFlags) => {
      const request = buildRequest(flags);
      const timeoutMs = parsePositiveNumber('--timeout', flags.timeout) * 1000;
      const streaming = flags.stream === true && !flags.json;
      // Ctrl-C cancels the request at the node, then exits 130.
      const interrupted = interruptSignal();
      let result;
      try {
        result = await askOverMqtt({
          connection: connection(flags),
          prefix: flags.prefix,
          device: flags.device ?? defaultDevice(),
          request,
          timeoutMs,
          signal: interrupted,
          ...(streaming ? { onChunk: (text: string) => process.stdout.write(text) } : {}),
        });
      } catch (err) {
        if (err instanceof Interrupted) process.stderr.write(`\nedgellm: cancelled request ${request.id}\n`);
        throw err;
      }
      const { reply, streamed } = result;
      if (flags.json) process.stdout.write(JSON.stringify(reply) + '\n');
      if (reply.type === 'error') {
        const e = (reply.error ?? {}) as { code?: string; message?: string };
        throw new EdgeError((e.code ?? 'E_ENGINE') as ErrorCode, e.message ?? 'the node answered with an error and no message');
      }
      if (flags.json) return;
      const text = typeof reply.text === 'string' ? reply.text : '';
      if (!streaming) {
        process.stdout.write(text + (text.endsWith('\n') ? '' : '\n'));
      } else if (text.startsWith(streamed)) {
        const rest = text.slice(streamed.length);
        process.stdout.write(rest + (text.endsWith('\n') ? '' : '\n'));
      } else {
        // A chunk went missing (chunks are best effort): the final text is the whole answer.
        process.stdout.write(`\n${text}${text.endsWith('\n') ? '' : '\n'}`);
      }
    });
  withExamples(cmd, [
    ['edgellm request -p "Hello" --stream', 'ask the local daemon (embedded broker), print as it comes'],
    ['edgellm request -p "Hi" --system "Answer in French" -n 32 --json', 'a chat; the final reply as JSON'],
    ['edgellm request -p "What is on the belt?" --image belt.jpg', 'with an image (answered by the upstream)'],
  ]);
}
