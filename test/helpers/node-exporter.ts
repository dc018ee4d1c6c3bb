/**
 * Test helper: Debian's real prometheus-node-exporter with only its textfile collector, reading a directory and
 * serving on 127.0.0.1 (a free port), stopped with the test; scrape() parses what it serves.
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './registry.ts';

export interface Sample { name: string; labels: Record<string, string>; value: number }

export interface NodeExporter {
  url: string;
  /** The samples it serves now (comments dropped), parsed from the exposition text. */
  scrape(): Promise<Sample[]>;
}

const unescape = (v: string): string => v.replace(/\\(["\\n])/g, (_m, c: string) => (c === 'n' ? '\n' : c));

export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = unescape(l[2] as string);
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The one sample named `name` whose labels include `labels`; undefined when none is served. */
export function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

export async function startNodeExporter(t: { teardown: (fn: () => Promise<void>) => void }, textfileDir: string): Promise<NodeExporter> {
  const port = await freePort();
  const child = spawn('prometheus-node-exporter', [
    '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${textfileDir}`, `--web.listen-address=127.0.0.1:${port}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });
  const url = `http://127.0.0.1:${port}/metrics`;
  const scrape = async (): Promise<Sample[]> => parseExposition(await (await fetch(url)).text());
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`prometheus-node-exporter exited ${child.exitCode}: ${stderr.slice(-500)}`);
    try {
      await scrape();
      return { url, scrape };
    } catch (e) {
      if (i > 100) throw new Error(`prometheus-node-exporter did not serve ${url} in 10 s: ${String(e)}; ${stderr.slice(-500)}`);
      await sleep(100);
    }
  }
}
