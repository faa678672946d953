/**
 * Admit: the limits this node checks itself (prompt bytes, a deadline already past), the prompt's
 * tokens, then access control and the route policy (DaemonPolicy, audited when they refuse); an
 * admitted job goes to run-local or run-cloud, an embedding request (op "embed") to run-embed, always
 * local. Every refusal is a final error reply.
 */
import { EdgeError } from '../../errors.js';
import { embedInputs } from '../../protocol/codec.js';
import { promptText, type Admitted } from '../../policy/admission.js';
import { variantFor, type ChosenVariant } from '../../policy/variants.js';
import { promptTooLarge, unknownAdapter } from '../engine-port.js';
import { finishError, refuse } from './finish.js';
import { defaultModel, type Job, type RequestContext } from './job.js';
import { runCloud } from './run-cloud.js';
import { runEmbed } from './run-embed.js';
import { queueWaitMs, runLocal } from './run-local.js';

export function admit(ctx: RequestContext, job: Job): void {
  const { row, request: r } = job;
  const embed = r.op === 'embed';
  // An embedding request's inputs are each held to the limits a prompt is held to.
  const texts = embed ? embedInputs(r) : [promptText(r)];
  for (const text of texts) {
    const tooLarge = promptTooLarge(embed ? { prompt: text } : r, ctx.config.limits.max_prompt_bytes);
    if (tooLarge) return refuse(ctx, job, tooLarge.code, tooLarge.message);
  }
  if (row.deadlineAt !== null && row.deadlineAt <= Date.now()) {
    return refuse(ctx, job, 'E_DEADLINE', 'the deadline passed before the request could start');
  }
  // An A/B name runs as the device's variant (or the one the request names): from here on, its model.
  let ab: ChosenVariant | undefined;
  try {
    ab = variantFor(ctx.config.variants, r.model, row.device, r.variant);
  } catch (err) {
    if (!(err instanceof EdgeError)) throw err;
    return refuse(ctx, job, err.code, err.message);
  }
  job.ab = ab;
  const model = ab?.variant ?? r.model;
  // Prompt tokens as the named local model (else the default one) counts them; a chat's template adds a few.
  const counter = (model !== undefined ? ctx.models.get(model) : undefined) ?? ctx.models.get(defaultModel(ctx));
  let promptTokens = 0;
  try {
    promptTokens = counter ? Math.max(...texts.map((text) => counter.countTokens(text))) : 0;
  } catch (err) {
    // Never let one prompt stop the message from being acknowledged (it would come back forever).
    return refuse(ctx, job, 'E_BAD_REQUEST', `the prompt could not be tokenized (${(err as Error).message}): check its text`);
  }
  // An adapter belongs to a local model: the one named (else the default); it never runs upstream.
  if (r.adapter !== undefined) {
    const target = ctx.models.get(model ?? defaultModel(ctx));
    const unknown = target ? unknownAdapter(target, r.adapter) : new EdgeError('E_UNKNOWN_ADAPTER', `adapter "${r.adapter}" needs a local model, and "${model}" is not one of this node's (${[...ctx.models.keys()].join(', ') || 'none'})`);
    if (unknown) return refuse(ctx, job, unknown.code, unknown.message);
  }
  if (embed && counter && promptTokens > counter.contextSize) {
    return refuse(ctx, job, 'E_INPUT_TOO_LONG', `an input is ${promptTokens} tokens, more than the ${counter.contextSize} ${counter.name} reads at once; split the text into shorter pieces`);
  }
  let admitted: Admitted;
  try {
    admitted = ctx.policy.admission.admit({
      id: r.id,
      device: row.device,
      trace_id: job.trace.traceId,
      ...(r.prompt !== undefined ? { prompt: r.prompt } : {}),
      ...(r.messages !== undefined ? { messages: r.messages } : {}),
      ...(model !== undefined ? { model } : {}),
      ...(ab !== undefined ? { ab } : {}),
      ...(r.adapter !== undefined ? { adapter: r.adapter } : {}),
      ...(r.max_tokens !== undefined ? { max_tokens: r.max_tokens } : {}),
      ...(r.route !== undefined ? { route: r.route } : {}),
      // Embeddings: the texts as the prompt (audited like one), the largest as its tokens, no completion; local only.
      ...(embed ? { prompt: texts.join('\n'), max_tokens: 0, route: 'local' as const } : {}),
      // Log-probabilities come from the local model only (the cloud route relays text).
      // So does a LoRA adapter: only the local model has it.
      ...(r.local_only !== undefined || r.logprobs || r.adapter !== undefined ? { local_only: r.local_only === true || r.logprobs === true || r.adapter !== undefined } : {}),
      payload_bytes: Buffer.byteLength(row.payload),
      prompt_tokens: promptTokens,
      queue_wait_ms: queueWaitMs(ctx),
      // Counted when it arrived; a request taken back after a restart is not counted again.
      rate_limited: !job.resumed,
    });
  } catch (err) {
    if (!(err instanceof EdgeError)) throw err;
    ctx.counters.denied++;
    return finishError(ctx, job, err.code, err.message); // admission audited the refusal
  }
  const { decision } = admitted;
  job.admitted = admitted;
  job.route = { route: decision.route, route_reason: decision.reason, model: decision.model };
  ctx.jobs.set(job.key, job);
  if (embed) return runEmbed(ctx, job, decision.model);
  if (decision.route === 'cloud') return runCloud(ctx, job);
  runLocal(ctx, job, decision.model, job.resumed);
}

