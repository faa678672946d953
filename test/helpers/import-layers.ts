// The import rule of src/ (docs/architecture.md, "Layer order"): every import, export-from, import type
// and import() of a file is read with the TypeScript compiler's parser, resolved to the file it names,
// and checked against the layer order; the same graph is searched for cycles. test/imports.test.ts runs
// it on src/ and on planted trees that break each rule.
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import ts from 'typescript';

/** One layer: a name, its rank (lowest first) and the path prefixes (folders end with '/') it owns. */
export interface Layer {
  rank: number;
  name: string;
  paths: string[];
}

/**
 * The fenced block after the "## Layer order" heading: one layer a line, `RANK NAME PATH...`. Layers
 * of the same rank are siblings: neither imports the other.
 */
export function parseLayerOrder(markdown: string): Layer[] {
  const section = markdown.split(/^## Layer order\s*$/m)[1];
  if (section === undefined) throw new Error('docs/architecture.md has no "## Layer order" section');
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined) throw new Error('the "## Layer order" section has no fenced block of layers');
  const layers: Layer[] = [];
  for (const line of block.split('\n')) {
    const m = /^(\d+)\s+(\S+)\s+(.+)$/.exec(line.trim());
    if (!m) continue;
    layers.push({ rank: Number(m[1]), name: m[2]!, paths: m[3]!.split(/\s+/).filter((p) => p.startsWith('src/')) });
  }
  if (layers.length === 0) throw new Error('the "## Layer order" block names no layer (lines: RANK NAME src/PATH...)');
  return layers;
}

/** The layer that owns a file: its longest matching path prefix. */
export function layerOf(file: string, layers: Layer[]): Layer | undefined {
  let best: { layer: Layer; length: number } | undefined;
  for (const layer of layers) {
    for (const p of layer.paths) {
      const match = p.endsWith('/') ? file.startsWith(p) : file === p;
      if (match && (best === undefined || p.length > best.length)) best = { layer, length: p.length };
    }
  }
  return best?.layer;
}

/** The relative module specifiers of one file: imports, `import type`, export-from, import(). */
export function importsOf(file: string, text: string): string[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const specs: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      specs.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) {
      specs.push(node.arguments[0].text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      specs.push(node.argument.literal.text); // import('./x.js').T in a type position
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return specs.filter((s) => s.startsWith('.'));
}

export interface Violation {
  from: string;
  to: string;
  why: string;
}

/**
 * Checks files (repository-relative path -> text) against the layers: an import may go to the
 * importer's own layer or to a lower rank; to a sibling (same rank), a higher rank, a file no layer owns,
 * or a file that does not exist, it is a violation. Then every cycle in the import graph is one.
 */
export function checkImports(files: Map<string, string>, layers: Layer[]): Violation[] {
  const violations: Violation[] = [];
  const graph = new Map<string, string[]>();
  for (const [file, text] of files) {
    const from = layerOf(file, layers);
    if (!from) violations.push({ from: file, to: file, why: 'no layer of docs/architecture.md owns this file' });
    const edges: string[] = [];
    for (const spec of importsOf(file, text)) {
      const to = normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts');
      if (!files.has(to)) {
        violations.push({ from: file, to, why: `imports ${spec}, which is no file of src/` });
        continue;
      }
      edges.push(to);
      const target = layerOf(to, layers);
      if (!from || !target || from === target) continue;
      if (target.rank > from.rank) violations.push({ from: file, to, why: `${from.name} (rank ${from.rank}) imports from ${target.name} (rank ${target.rank}), a higher layer` });
      else if (target.rank === from.rank) violations.push({ from: file, to, why: `${from.name} imports from its sibling ${target.name} (both rank ${from.rank})` });
    }
    graph.set(file, edges);
  }
  for (const cycle of cyclesOf(graph)) violations.push({ from: cycle[0]!, to: cycle[1] ?? cycle[0]!, why: `import cycle: ${cycle.join(' -> ')} -> ${cycle[0]}` });
  return violations;
}

/** The strongly connected components of more than one file (or a file that imports itself), Tarjan's way. */
export function cyclesOf(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(component.reverse());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) strong(v);
  return out;
}

/** Every .ts file under `dir` (repository-relative paths), with its text. */
export function readTree(root: string, dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of ts.sys.readDirectory(join(root, d), ['.ts'], undefined, undefined)) {
      files.set(relative(root, e), readFileSync(e, 'utf8'));
    }
  };
  walk(dir);
  return files;
}
