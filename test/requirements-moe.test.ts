// An MoE larger than a device's RAM: Qwen3-30B-A3B's real shape (its config.json: 48 layers of
// 128 experts of 768, 8 used per token, hidden 2048, 32 query and 4 KV heads of 128, vocabulary
// 151936, untied output) at llama.cpp's Q4_K_M, through the engine's own requirements code on a
// header-only GGUF, judged for 8 GB and 16 GB devices: fits in RAM / runs from page cache / does
// not fit, with the storage reads a token costs and the tokens/s they allow. The README's table
// under "An MoE larger than RAM" is this test's output: the test fails when the two differ.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { meta, type GgufWriteValue } from '../src/engine/gguf-writer.js';
import { readGgufInfo } from '../src/engine/gguf.js';
import {
  deviceOfSize,
  memoryFit,
  modelRequirements,
  OS_RESERVE_BYTES,
  residency,
  STORAGE_READ_BYTES_PER_S,
} from '../src/engine/requirements.js';
import { formatBytes } from '../src/cli/units.js';
import { assertCliBuilt, root, run } from './fixtures/paths.js';
import { writeShapeGguf, type ShapeTensor } from './fixtures/shape-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-moe-shape-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
t.before(assertCliBuilt);

// Qwen/Qwen3-30B-A3B config.json.
const QWEN3_30B_A3B = { hidden: 2048, layers: 48, heads: 32, kvHeads: 4, headDim: 128, experts: 128, used: 8, moeFf: 768, vocab: 151936, context: 40960 };

function qwen3MoeShape(): { metadata: Record<string, GgufWriteValue>; tensors: ShapeTensor[] } {
  const s = QWEN3_30B_A3B, p = 'qwen3moe.', D = s.hidden, Q = s.heads * s.headDim, KV = s.kvHeads * s.headDim;
  const metadata: Record<string, GgufWriteValue> = {
    'general.architecture': meta.string('qwen3moe'),
    'general.name': meta.string('Qwen3-30B-A3B (shape only)'),
    [p + 'context_length']: meta.uint32(s.context),
    [p + 'embedding_length']: meta.uint32(D),
    [p + 'block_count']: meta.uint32(s.layers),
    [p + 'feed_forward_length']: meta.uint32(6144),
    [p + 'attention.head_count']: meta.uint32(s.heads),
    [p + 'attention.head_count_kv']: meta.uint32(s.kvHeads),
    [p + 'attention.key_length']: meta.uint32(s.headDim),
    [p + 'attention.value_length']: meta.uint32(s.headDim),
    [p + 'attention.layer_norm_rms_epsilon']: meta.float32(1e-6),
    [p + 'rope.freq_base']: meta.float32(1e6),
    [p + 'expert_count']: meta.uint32(s.experts),
    [p + 'expert_used_count']: meta.uint32(s.used),
    [p + 'expert_feed_forward_length']: meta.uint32(s.moeFf),
  };
  const tensors: ShapeTensor[] = [
    { name: 'token_embd.weight', shape: [D, s.vocab] },
    { name: 'output_norm.weight', shape: [D] },
    { name: 'output.weight', shape: [D, s.vocab] },
  ];
  for (let l = 0; l < s.layers; l++) {
    const b = `blk.${l}.`;
    tensors.push(
      { name: b + 'attn_norm.weight', shape: [D] },
      { name: b + 'attn_q.weight', shape: [D, Q] },
      { name: b + 'attn_k.weight', shape: [D, KV] },
      { name: b + 'attn_v.weight', shape: [D, KV] },
      { name: b + 'attn_q_norm.weight', shape: [s.headDim] },
      { name: b + 'attn_k_norm.weight', shape: [s.headDim] },
      { name: b + 'attn_output.weight', shape: [Q, D] },
      { name: b + 'ffn_norm.weight', shape: [D] },
      { name: b + 'ffn_gate_inp.weight', shape: [D, s.experts] },
      { name: b + 'ffn_gate_exps.weight', shape: [D, s.moeFf, s.experts] },
      { name: b + 'ffn_up_exps.weight', shape: [D, s.moeFf, s.experts] },
      { name: b + 'ffn_down_exps.weight', shape: [s.moeFf, D, s.experts] },
    );
  }
  return { metadata, tensors };
}

const GB = 1024 ** 3;

t.test('Qwen3-30B-A3B Q4_K_M runs from page cache on 8 GB and 16 GB devices; storage reads per token and the tokens/s bound', async (t) => {
  const shape = qwen3MoeShape();
  const path = join(dir, 'qwen3-30b-a3b-q4_k_m.gguf');
  await writeShapeGguf(path, shape.metadata, shape.tensors, 'q4_k_m');
  const req = modelRequirements(path, { contextSize: 4096 });

  // The routed experts' bytes, summed from the tensor table by the TypeScript GGUF reader.
  const info = readGgufInfo(path);
  const experts = info.tensors.filter((x) => x.name.includes('_exps.')).reduce((n, x) => n + x.bytes, 0);
  t.equal(req.expert_bytes, experts);
  t.ok(req.weight_bytes > 16.5 * GB && req.weight_bytes < 18 * GB, `Q4_K_M weights ${(req.weight_bytes / GB).toFixed(2)} GiB (llama.cpp's file: 18.6 GB = 17.3 GiB)`);
  t.ok(experts / req.weight_bytes > 0.9, 'the experts are most of the file');
  // 48 layers x 2 (K, V) x 4 heads x 128 x f16.
  t.equal(req.kv_bytes_per_token, 48 * 2 * 4 * 128 * 2);

  const perToken = (experts * 8) / 128;
  const rows: string[] = [
    '| device | storage | verdict | always read (resident) | experts cached | experts per token | from storage per token | tokens/s bound |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const gib of [8, 16]) {
    const mem = deviceOfSize(gib * GB);
    const fit = memoryFit(req, mem);
    const always = fit.neededBytes - experts;
    const cached = gib * GB - OS_RESERVE_BYTES - always;
    for (const storage of ['sd', 'nvme'] as const) {
      const r = residency(req, fit.neededBytes, mem, STORAGE_READ_BYTES_PER_S[storage]);
      t.equal(r.verdict, 'runs-from-page-cache', `${gib} GB`);
      t.equal(r.alwaysTouchedBytes, always);
      t.equal(r.cachedExpertBytes, cached);
      t.equal(r.expertBytesPerToken, perToken);
      t.ok(Math.abs(r.storageBytesPerToken - perToken * (1 - cached / experts)) < 1);
      t.ok(Math.abs(r.tokensPerSecondBound! - STORAGE_READ_BYTES_PER_S[storage] / r.storageBytesPerToken) < 1e-9);
      rows.push(
        `| ${gib} GB | ${storage} (${STORAGE_READ_BYTES_PER_S[storage] / 1e6} MB/s) | ${r.verdict} | ${formatBytes(r.alwaysTouchedBytes)} | ${formatBytes(r.cachedExpertBytes)} of ${formatBytes(r.expertBytes)} |` +
          ` ${formatBytes(r.expertBytesPerToken)} | ${formatBytes(r.storageBytesPerToken)} | ${r.tokensPerSecondBound!.toFixed(2)} |`,
      );
    }
  }
  const table = rows.join('\n');
  t.comment('\n' + table);
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  t.ok(readme.includes(table), "README's Qwen3-30B-A3B table is this output (update it from the comment above)");
  // More memory caches more experts: fewer reads per token.
  const at = (gib: number) => residency(req, memoryFit(req, deviceOfSize(gib * GB)).neededBytes, deviceOfSize(gib * GB), STORAGE_READ_BYTES_PER_S.nvme);
  t.ok(at(16).storageBytesPerToken < at(8).storageBytesPerToken / 2);
  t.equal(at(24).verdict, 'fits-in-ram');
  t.equal(at(24).storageBytesPerToken, 0);
  // 1.5 GB: less than the ~1.1 GB of attention, embeddings and classifier plus KV and scratch.
  t.equal(at(1.5).verdict, 'does-not-fit');
});

t.test('`edgellm inspect --memory 8G --storage nvme` prints the page-cache verdict with the tokens/s bound', async (t) => {
  const shape = qwen3MoeShape();
  const path = join(dir, 'qwen3-cli.gguf');
  await writeShapeGguf(path, shape.metadata, shape.tensors, 'q4_k_m');
  const r = run(['inspect', path, '--context', '4096', '--memory', '8G', '--storage', 'nvme']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^residency:\s+runs from page cache: .* each token reads .* from storage: at most \d+\.\d tokens\/s from nvme$/m);
  t.match(r.stdout, /^device RAM:\s+8\.00 GiB total, 7\.50 GiB available \(--memory/m);
  const j = run(['inspect', path, '--memory', '32G', '--json']);
  t.equal(j.status, 0, j.stderr);
  t.equal(JSON.parse(j.stdout).residency.verdict, 'fits-in-ram');
  const tiny = run(['inspect', path, '--memory', '1G']);
  t.match(tiny.stdout, /^residency:\s+does not fit: the part every token reads/m);
  const bad = run(['inspect', path, '--memory', 'lots']);
  t.not(bad.status, 0);
  t.match(bad.stderr, /--memory takes a memory size like 8G/);
  const badStorage = run(['inspect', path, '--storage', 'tape']);
  t.not(badStorage.status, 0);
  t.match(badStorage.stderr, /--storage takes sd, nvme or a read speed in MB\/s, got "tape"/);
});
