// Imports run one way: every file of src/ imports only from its own layer or a lower one, in the order
// docs/architecture.md states ("## Layer order"), and no import cycle exists. The checker is held to
// planted trees first, so a rule it could not enforce would fail here rather than pass silently.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkImports, layerOf, parseLayerOrder, readTree } from './helpers/import-layers.js';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const layers = parseLayerOrder(readFileSync(resolve(root, 'docs', 'architecture.md'), 'utf8'));

t.test('the layer order is read from docs/architecture.md', async (t) => {
  t.ok(layers.length >= 8, `${layers.length} layers`);
  t.equal(layerOf('src/errors.ts', layers)?.rank, 0, 'errors.ts is on the ground floor');
  t.ok(layerOf('src/cli/main.ts', layers)!.rank > layerOf('src/daemon/service.ts', layers)!.rank, 'the CLI sits above the daemon');
  t.ok(layerOf('src/daemon/service.ts', layers)!.rank > layerOf('src/transport/mqtt/session.ts', layers)!.rank, 'the daemon above its transports');
  t.ok(layerOf('src/transport/mqtt/session.ts', layers)!.rank > layerOf('src/protocol/codec.ts', layers)!.rank, 'transports above the protocol');
});

t.test('the checker finds a planted upward import, a sibling import, a cycle and an unowned file', async (t) => {
  const planted = (files: Record<string, string>) => checkImports(new Map(Object.entries(files)), layers);
  t.same(planted({ 'src/errors.ts': '', 'src/daemon/a.ts': "import { x } from '../errors.js';" }), [], 'a downward import is fine');
  t.match(planted({ 'src/errors.ts': "import type { Service } from './daemon/service.js';", 'src/daemon/service.ts': '' }), [{ from: 'src/errors.ts', why: /ground \(rank 0\) imports from daemon \(rank \d+\), a higher layer/ }]);
  t.match(planted({ 'src/transport/mqtt/s.ts': "export { a } from '../http/h.js';", 'src/transport/http/h.ts': '' }), [{ why: /imports from its sibling http/ }], 'export-from counts');
  t.match(planted({ 'src/store/a.ts': "const m = await import('../daemon/b.js');", 'src/daemon/b.ts': '' }), [{ why: /a higher layer/ }], 'import() counts');
  t.match(planted({ 'src/engine/a.ts': "import type { B } from './b.js';", 'src/engine/b.ts': "import type { A } from './a.js';" }), [{ why: /import cycle: src\/engine\/a\.ts -> src\/engine\/b\.ts -> src\/engine\/a\.ts/ }], 'a type-only cycle counts');
  t.match(planted({ 'src/nowhere/x.ts': '' }), [{ why: /no layer/ }]);
  t.match(planted({ 'src/daemon/a.ts': "import './gone.js';" }), [{ why: /no file of src/ }]);
});

t.test('every import in src/ follows the layer order, and there is no import cycle', async (t) => {
  const files = readTree(root, 'src');
  t.ok(files.size > 80, `${files.size} files read`);
  const violations = checkImports(files, layers);
  t.same(violations.map((v) => `${v.from}: ${v.why}`), [], 'no violation');
});
