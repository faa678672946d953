// A plain HTTP client for the OpenAI-compatible API, as curl or an SDK would use it: whole replies,
// server-sent events read as they arrive, and a way to hang up mid-stream.

export interface JsonReply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** One SSE `data:` payload: a parsed object, or the literal [DONE]. */
export type SseEvent = Record<string, unknown> | '[DONE]';

export async function postJson(url: string, body: unknown, opts: { key?: string; raw?: string; contentType?: string } = {}): Promise<JsonReply> {
  const res = await fetch(url, {
    method: 'POST',
    headers: headersOf(opts),
    body: opts.raw ?? JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

export async function getJson(url: string, opts: { key?: string; method?: string } = {}): Promise<JsonReply> {
  const res = await fetch(url, { method: opts.method ?? 'GET', headers: opts.key ? { authorization: `Bearer ${opts.key}` } : {} });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

/**
 * A streamed request: resolves with every event once the server ends the stream. `hangUpAfter` closes
 * the connection once that many content chunks have arrived (then `events` holds what came before).
 */
export async function postStream(
  url: string,
  body: unknown,
  opts: { key?: string; hangUpAfter?: number } = {},
): Promise<{ status: number; contentType: string; events: SseEvent[]; raw: string }> {
  const ac = new AbortController();
  const res = await fetch(url, { method: 'POST', headers: headersOf(opts), body: JSON.stringify(body), signal: ac.signal });
  const events: SseEvent[] = [];
  let raw = '';
  let content = 0;
  const decoder = new TextDecoder();
  try {
    for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
      raw += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = raw.indexOf('\n\n')) >= 0) {
        const block = raw.slice(0, end);
        raw = raw.slice(end + 2);
        for (const line of block.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          const ev: SseEvent = data === '[DONE]' ? '[DONE]' : (JSON.parse(data) as Record<string, unknown>);
          events.push(ev);
          if (ev !== '[DONE]' && typeof deltaOf(ev)?.content === 'string' && deltaOf(ev)!.content !== '') content++;
        }
      }
      if (opts.hangUpAfter !== undefined && content >= opts.hangUpAfter) {
        ac.abort();
        break;
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) throw err;
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', events, raw };
}

/** choices[0].delta of a chunk. */
export function deltaOf(ev: SseEvent): Record<string, unknown> | undefined {
  if (ev === '[DONE]') return undefined;
  const choices = ev.choices as Array<{ delta?: Record<string, unknown> }> | undefined;
  return choices?.[0]?.delta;
}

/** The streamed text: every chunk's delta.content joined. */
export function streamedText(events: SseEvent[]): string {
  return events.map((e) => deltaOf(e)?.content ?? '').join('');
}

function headersOf(opts: { key?: string; contentType?: string }): Record<string, string> {
  return { 'content-type': opts.contentType ?? 'application/json', ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}) };
}
