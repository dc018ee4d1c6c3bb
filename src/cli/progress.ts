/**
 * Progress for people: a cli-progress bar on a TTY, plain lines otherwise (one per phase change, and every 10%
 * while downloading), so logs and pipes stay readable.
 */
import cliProgress from 'cli-progress';
import type { Progress } from '../host/deps.ts';

export interface ProgressRenderer {
  update(p: Progress): void;
  stop(): void;
}

const mib = (n: number): string => (n / 1048576).toFixed(1);

export function progressRenderer(out: NodeJS.WritableStream & { isTTY?: boolean }): ProgressRenderer {
  if (out.isTTY === true) return ttyRenderer(out);
  let last = '';
  let lastPct = -10;
  return {
    update(p) {
      if (p.operation === 'downloading') {
        if (p.percent < lastPct + 10 && p.percent !== 100) return;
        lastPct = p.percent;
        out.write(`[${p.operation}] ${p.percent}% ${p.message} (${mib(p.bytesDone)}/${mib(p.bytesTotal)} MiB)\n`);
        return;
      }
      const line = `[${p.operation}] ${p.message}`;
      if (line !== last) out.write(`${line}\n`);
      last = line;
    },
    stop() {},
  };
}

function ttyRenderer(out: NodeJS.WritableStream): ProgressRenderer {
  const bar = new cliProgress.SingleBar({
    stream: out as NodeJS.WriteStream,
    // `{total}` is cli-progress's own (the bar's 100 steps): the byte total goes by another name.
    format: '{operation} [{bar}] {percentage}% | {message} | {doneMiB}/{totalMiB} MiB',
    hideCursor: true,
    clearOnComplete: false,
    noTTYOutput: false,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(p) {
      const payload = { operation: p.operation.padEnd(11), message: p.message.slice(0, 48), doneMiB: mib(p.bytesDone), totalMiB: mib(p.bytesTotal) };
      if (!started) {
        bar.start(100, p.percent, payload);
        started = true;
      } else {
        bar.update(p.percent, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
