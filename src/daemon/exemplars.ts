/**
 * Exemplars: for each histogram bucket and counter series, the trace of the last request observed in
 * it, shown in the OpenMetrics exposition as `<sample> # {trace_id="..."} <value> <timestamp>`. So an
 * operator who sees a slow bucket can look that request up by its trace id in the log and the audit.
 *
 * prom-client keeps exemplars only on an OpenMetrics registry, and rendering one renames counters
 * for good (it drops their `_total`), which would change the Prometheus text every other scraper
 * reads. So the registry stays Prometheus-typed, the exemplars are kept here, and openMetricsText()
 * rewrites the registry's Prometheus text as OpenMetrics 1.0: counter families named without
 * `_total`, exemplars on the samples they belong to, `# EOF` at the end.
 */

/** OpenMetrics' content type (what Prometheus asks for first in its Accept header). */
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** Whether a scraper's Accept header asks for OpenMetrics (Prometheus' does when exemplar storage is on, and by default since 2.x). */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  return accept !== undefined && /application\/openmetrics-text/i.test(accept);
}

interface Exemplar {
  traceId: string;
  /** The observation: seconds for a histogram, the increment for a counter. */
  value: number;
  /** Seconds since the epoch. */
  at: number;
}

export class ExemplarBook {
  /** By sample: name, its labels sorted (le included for buckets). */
  private readonly last = new Map<string, Exemplar>();

  /** A histogram observation: its exemplar goes on the smallest bucket that holds it (le="+Inf" past the last). */
  histogram(name: string, buckets: readonly number[], labels: Record<string, string>, seconds: number, traceId: string): void {
    const bound = buckets.find((b) => seconds <= b);
    this.set(`${name}_bucket`, { ...labels, le: bound === undefined ? '+Inf' : String(bound) }, seconds, traceId);
  }

  /** A counter increment (its `_total` sample). */
  counter(name: string, labels: Record<string, string>, inc: number, traceId: string): void {
    this.set(name, labels, inc, traceId);
  }

  private set(sample: string, labels: Record<string, string>, value: number, traceId: string): void {
    this.last.set(sampleKey(sample, labels), { traceId, value, at: Date.now() / 1000 });
  }

  /** The registry's Prometheus 0.0.4 text as OpenMetrics 1.0, with the exemplars. */
  openMetricsText(prometheusText: string): string {
    const out: string[] = [];
    const counters = new Set<string>();
    for (const line of prometheusText.split('\n')) if (/^# TYPE \S+ counter$/.test(line)) counters.add(line.split(' ')[2]!);
    for (const line of prometheusText.split('\n')) {
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) (\S+)(.*)$/.exec(line);
      if (meta) {
        const family = counters.has(meta[2]!) ? meta[2]!.replace(/_total$/, '') : meta[2]!;
        out.push(`# ${meta[1]} ${family}${meta[3]}`);
        continue;
      }
      const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
      const ex = sample ? this.last.get(sampleKey(sample[1]!, parseLabels(sample[2] ?? ''))) : undefined;
      out.push(ex ? `${line} # {trace_id="${ex.traceId}"} ${ex.value} ${ex.at.toFixed(3)}` : line);
    }
    return `${out.join('\n')}\n# EOF\n`;
  }
}

function sampleKey(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

/** `a="x",b="y\"z"` -> {a: 'x', b: 'y"z'} (the exposition's escapes: \\, \", \n). */
function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const m of text.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}
