/**
 * Progress for people: one cli-progress bar on a TTY for the whole job (phase n of m, percent, bytes, and while
 * downloading the rate and time left; a last 100% frame on success, the line cleared on failure), plain lines
 * otherwise (one per phase change, and every 10% while downloading), so logs and pipes stay readable.
 */
import cliProgress from 'cli-progress';
import type { Progress } from '../host/deps.ts';

export interface ProgressRenderer {
  update(p: Progress): void;
  /** The job succeeded: a last frame at 100% (TTY), then stop. */
  done(): void;
  /** A line for the user (Ctrl-C's): on a TTY the bar's line is cleared first, so the bar never overwrites it. */
  note(write: () => void): void;
  /** Stop; on a TTY after a failure the bar's line is cleared (no frame that looks like progress is left). */
  stop(): void;
}

/** PURE: the binary unit a byte count reads best in (KiB under 1 MiB, MiB under 1 GiB, else GiB). */
function unitOf(n: number): [number, string] {
  if (n >= 1024 ** 3) return [1024 ** 3, 'GiB'];
  if (n >= 1024 ** 2) return [1024 ** 2, 'MiB'];
  return [1024, 'KiB'];
}

/** PURE: "0.4/4.0 MiB", "12.0/30.5 KiB": done and total in the total's unit (a small layer never reads 0.0 MiB). */
export function bytesOf(done: number, total: number): string {
  const [u, name] = unitOf(total);
  return `${(done / u).toFixed(1)}/${(total / u).toFixed(1)} ${name}`;
}

/** PURE: "12.3 MiB", "512.0 KiB". */
export function bytesText(n: number): string {
  const [u, name] = unitOf(n);
  return `${(n / u).toFixed(1)} ${name}`;
}

/** The phases of a job in the order they first appear; the bar counts them (a phase seen again counts no step back). */
export const PHASES: readonly Progress['operation'][] = ['checking', 'verifying', 'staging', 'hooks', 'downloading', 'finalizing'];

/** PURE: "12.3 MiB/s, 4 s left" (or KiB/s) from the bytes done over the last few seconds; '' when not known. */
export function rateText(samples: ReadonlyArray<{ at: number; bytes: number }>, total: number): string {
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (first === undefined || last === undefined || last.at - first.at < 500 || last.bytes <= first.bytes) return '';
  const rate = ((last.bytes - first.bytes) * 1000) / (last.at - first.at);
  const left = Math.max(0, total - last.bytes) / rate;
  const eta = left < 60 ? `${Math.ceil(left)} s` : `${Math.floor(left / 60)} min ${Math.ceil(left % 60)} s`;
  return ` | ${bytesText(rate)}/s, ${eta} left`;
}

export function progressRenderer(out: NodeJS.WritableStream & { isTTY?: boolean }): ProgressRenderer {
  if (out.isTTY === true) return ttyRenderer(out);
  let last = '';
  let lastPct = -10;
  return {
    update(p) {
      if (p.operation === 'downloading') {
        if (p.percent < lastPct + 10 && p.percent !== 100) return;
        lastPct = p.percent;
        out.write(`[${p.operation}] ${p.percent}% ${p.message} (${bytesOf(p.bytesDone, p.bytesTotal)})\n`);
        return;
      }
      const line = `[${p.operation}] ${p.message}`;
      if (line !== last) out.write(`${line}\n`);
      last = line;
    },
    done() {},
    note(write) {
      write();
    },
    stop() {},
  };
}

function ttyRenderer(out: NodeJS.WritableStream): ProgressRenderer {
  const bar = new cliProgress.SingleBar({
    stream: out as NodeJS.WriteStream,
    // `{total}` is cli-progress's own (the bar's 100 steps): the byte total goes by another name.
    format: '[{step}/{steps}] {operation} [{bar}] {percentage}% | {message}{bytes}{rate}',
    hideCursor: true,
    clearOnComplete: false,
    noTTYOutput: false,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  let step = 0;
  let samples: Array<{ at: number; bytes: number }> = [];
  let lastProgress: Progress | undefined;
  let overall = 0;
  const draw = (p: Progress): void => {
    step = Math.max(step, PHASES.indexOf(p.operation) + 1);
    // The whole job's percent: the phases done, plus the part of the current one (never going back).
    const within = PHASES[step - 1] === p.operation ? p.percent / 100 : 0;
    overall = Math.max(overall, Math.min(100, Math.round(((step - 1 + within) / PHASES.length) * 100)));
    if (p.operation === 'downloading') {
      const now = Date.now();
      samples = [...samples.filter((x) => now - x.at <= 3000), { at: now, bytes: p.bytesDone }];
    }
    const payload = {
      step, steps: PHASES.length, operation: p.operation.padEnd(11), message: p.message.slice(0, 40), bytes: p.bytesTotal > 0 ? ` | ${bytesOf(p.bytesDone, p.bytesTotal)}` : '',
      rate: p.operation === 'downloading' && p.bytesDone < p.bytesTotal ? rateText(samples, p.bytesTotal) : '',
    };
    if (!started) {
      bar.start(100, overall, payload);
      started = true;
    } else {
      bar.update(overall, payload);
    }
  };
  return {
    update(p) {
      lastProgress = p;
      draw(p);
    },
    done() {
      if (!started) return;
      step = PHASES.length;
      draw({ operation: 'finalizing', percent: 100, message: 'done', bytesDone: lastProgress?.bytesTotal ?? 0, bytesTotal: lastProgress?.bytesTotal ?? 0 });
      bar.stop();
      started = false;
    },
    note(write) {
      // Clear the bar's line; the note goes on it, and the next frame is drawn on the line after: the cursor position
      // cli-progress saved at start (and restores when it stops) moves there too (ESC 7), so stopping never goes
      // back over the note.
      if (!started) {
        write();
        return;
      }
      // cli-progress turns the terminal's line wrap off while it draws (ESC[?7l, so a long bar is cut, not wrapped):
      // the note is written with wrap on, whole on as many lines as it takes, then wrap goes off again for the bar.
      out.write('\r\u001b[2K\u001b[?7h');
      write();
      out.write('\u001b[?7l\u001b7');
    },
    stop() {
      if (!started) return;
      bar.stop();
      // After a failure or a cancel: no frame that looks like progress is left (cli-progress moved to a new line).
      out.write('\u001b[1A\r\u001b[2K');
      started = false;
    },
  };
}
