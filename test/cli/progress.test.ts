/**
 * The TTY progress bar's pure parts and its frames on a fake TTY stream: phases counted without going back, rate and
 * time left while downloading, a last 100% frame on success, the line cleared on failure, a note (Ctrl-C's) on a
 * cleared line. (The real pty run through cosd is in test/integration/cosctl-daemon.test.ts.)
 */
import test from 'ava';
import { Writable } from 'node:stream';
import { bytesOf, bytesText, PHASES, progressRenderer, rateText } from '../../src/cli/progress.ts';

function tty(): { stream: Writable & { isTTY: boolean; columns: number }; text(): string } {
  const chunks: string[] = [];
  const stream = Object.assign(new Writable({ write(c: Buffer | string, _e, cb) { chunks.push(c.toString()); cb(); } }), { isTTY: true, columns: 160 });
  return { stream, text: () => chunks.join('') };
}

const MiB = 1048576;

test('bytes in the unit of the total: a small layer reads in KiB, never 0.0 MiB; a rate in its own unit', (t) => {
  t.is(bytesOf(12 * 1024, 30.5 * 1024), '12.0/30.5 KiB');
  t.is(bytesOf(0, 300), '0.0/0.3 KiB');
  t.is(bytesOf(0.4 * MiB, 4 * MiB), '0.4/4.0 MiB');
  t.is(bytesOf(MiB, 3 * 1024 * MiB), '0.0/3.0 GiB');
  t.is(bytesText(512 * 1024), '512.0 KiB');
  t.is(rateText([{ at: 0, bytes: 0 }, { at: 1000, bytes: 100 * 1024 }], 10 * MiB), ' | 100.0 KiB/s, 1 min 42 s left');
});

test('rateText: MiB/s and the time left from the last samples; nothing before half a second of data', (t) => {
  t.is(rateText([{ at: 0, bytes: 0 }, { at: 1000, bytes: 10 * MiB }], 40 * MiB), ' | 10.0 MiB/s, 3 s left');
  t.is(rateText([{ at: 0, bytes: 0 }, { at: 1000, bytes: MiB }], 200 * MiB), ' | 1.0 MiB/s, 3 min 19 s left');
  t.is(rateText([{ at: 0, bytes: 0 }, { at: 100, bytes: MiB }], 2 * MiB), '');
  t.is(rateText([], 2 * MiB), '');
});

test('frames: [n/6] phases never go back, a last 100% "done" frame on success', async (t) => {
  const out = tty();
  const bar = progressRenderer(out.stream);
  const at = (operation: (typeof PHASES)[number], percent: number, bytesDone = 0, bytesTotal = 0): void =>
    bar.update({ operation, percent, message: operation, bytesDone, bytesTotal });
  at('checking', 0);
  at('verifying', 10);
  at('checking', 12);
  at('downloading', 50, MiB, 2 * MiB);
  bar.done();
  bar.stop();
  const frames = [...out.text().matchAll(/\[(\d)\/6\] (\w+) +\[[^\]]*\] (\d+)% \| (\w+)/g)].map((m) => `${m[1]} ${m[2]} ${m[3]} ${m[4]}`);
  t.is(frames[frames.length - 1], '6 finalizing 100 done', frames.join(' | '));
  const steps = frames.map((f) => Number(f.split(' ')[0]));
  t.deepEqual(steps, [...steps].sort((a, b) => a - b), frames.join(' | '));
  t.false(out.text().endsWith('\u001b[2K'), 'a finished bar stays');
});

test('a failure clears the bar\'s line; a note clears it first so the bar never overwrites it', (t) => {
  const out = tty();
  const bar = progressRenderer(out.stream);
  bar.update({ operation: 'downloading', percent: 40, message: 'layer 1/1', bytesDone: MiB, bytesTotal: 3 * MiB });
  let noted = '';
  bar.note(() => {
    noted = out.text();
  });
  t.true(noted.endsWith('\r\u001b[2K\u001b[?7h'), 'the line is cleared, and line wrap is on again, before the note is written');
  bar.stop();
  t.true(out.text().endsWith('\u001b[1A\r\u001b[2K'), 'the last frame is cleared after a failure');
});

test('without a TTY: plain lines, one per phase change, none of the bar\'s escapes', (t) => {
  const chunks: string[] = [];
  const bar = progressRenderer(new Writable({ write(c: Buffer | string, _e, cb) { chunks.push(c.toString()); cb(); } }));
  bar.update({ operation: 'checking', percent: 0, message: 'resolving r/os:1', bytesDone: 0, bytesTotal: 0 });
  bar.update({ operation: 'checking', percent: 0, message: 'resolving r/os:1', bytesDone: 0, bytesTotal: 0 });
  bar.done();
  bar.stop();
  t.is(chunks.join(''), '[checking] resolving r/os:1\n');
});
