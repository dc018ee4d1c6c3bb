/**
 * cosctl in a real terminal, as a user sees it: each test runs cosctl inside tmux (a private tmux server, a 100x30
 * window) and reads the screen tmux renders (`capture-pane -p`), not the raw escape stream: the whole-job bar drawn
 * in place on one line while the layer downloads, a last 100% frame above the summary on success, and on Ctrl-C
 * (tmux send-keys C-c) cosctl's cancelling line on the screen, never overwritten by the bar, the bar's line cleared,
 * and the exit code of a cancelled upgrade. The upgrade runs in cosd on a private bus; the layer download is held by
 * a fault proxy so the screen can be read mid-download.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { holdLayerDownload } from '../helpers/fault-proxy.ts';
import { daemonHost, firstLayer } from '../helpers/daemon-host.ts';
import { cosctlInvocation, sha256File } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

let reg: TestRegistry;
let layer = '';
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  layer = (await firstLayer(reg, 'cos/os', 'v2')).digest;
});
test.after.always(async () => {
  await reg?.stop();
});

function run(argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(argv[0] as string, argv.slice(1), { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const quote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/** A tmux server of the test's own, one 100x30 window running `argv` with `env`, then printing its exit code. */
async function inTmux(t: ExecutionContext, argv: readonly string[], env: Record<string, string | undefined>): Promise<{ screen(): Promise<string>; keys(k: string): Promise<void>; until(re: RegExp, ms?: number): Promise<string> }> {
  const socket = `cos-agent-test-${randomBytes(6).toString('hex')}`;
  const vars = Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${quote(v as string)}`);
  const command = `env -i ${vars.join(' ')} TERM=screen ${argv.map(quote).join(' ')}; echo "EXIT=$?"; sleep 600`;
  const started = await run(['tmux', '-L', socket, '-f', '/dev/null', 'new-session', '-d', '-x', '100', '-y', '30', '-s', 'cos', command]);
  if (started.code !== 0) throw new Error(`tmux did not start: ${started.stderr}`);
  t.teardown(async () => {
    await run(['tmux', '-L', socket, 'kill-server']);
  });
  // -J: a line the terminal wrapped comes back whole (the screen's text, not its rows).
  const screen = async (): Promise<string> => (await run(['tmux', '-L', socket, 'capture-pane', '-p', '-J', '-t', 'cos'])).stdout;
  return {
    screen,
    keys: async (k) => {
      await run(['tmux', '-L', socket, 'send-keys', '-t', 'cos', k]);
    },
    until: async (re, ms = 120_000) => {
      const end = Date.now() + ms;
      let last = '';
      while (Date.now() < end) {
        last = await screen();
        if (re.test(last)) return last;
        await sleep(100);
      }
      throw new Error(`the screen never showed ${re}:\n${last}`);
    },
  };
}

const BAR = /^\[(\d)\/6\] (\w+) +\[[\u2588\u2591]{40}\] (\d{1,3})% \| (.*)$/;

test.serial('tmux: the whole-job bar is drawn in place on one line while downloading, then a last 100% frame above the summary', async (t) => {
  const { host, env } = await daemonHost(t);
  const held = await holdLayerDownload(t, reg.url, layer);
  const inv = cosctlInvocation(host, ['upgrade', '--no-verify', '--image', `${held.proxy.host}/cos/os:v2`], env);
  const term = await inTmux(t, inv.argv, inv.env);
  await held.downloading();
  const during = await term.until(/\[5\/6\] downloading/);
  const bars = during.split('\n').filter((l) => BAR.test(l));
  t.is(bars.length, 1, `one bar line on the screen, redrawn in place:\n${during}`);
  t.regex(bars[0] ?? '', /^\[5\/6\] downloading +\[[\u2588\u2591]{40}\] \d{1,3}% \| layer 1\/1 [0-9a-f]{12}/);
  t.true((bars[0] ?? '').length <= 100, 'the bar is cut to the window, never wrapped');
  held.release();
  const end = await term.until(/EXIT=\d+/);
  t.regex(end, /EXIT=0/, end);
  const lines = end.split('\n');
  const finalBars = lines.filter((l) => BAR.test(l));
  t.is(finalBars.length, 1, `still one bar line:\n${end}`);
  t.regex(finalBars[0] ?? '', /^\[6\/6\] finalizing +\[\u2588{40}\] 100% \| done/, 'the last frame: the whole job, 100%');
  const barAt = lines.findIndex((l) => BAR.test(l));
  t.regex(lines[barAt + 1] ?? '', /^Upgraded active slot to 127\.0\.0\.1:\d+\/cos\/os:v2@sha256:[0-9a-f]{64} version 2\.0\.0 \[signature NOT verified\]\.$/, end);
  t.is(lines[barAt + 2], 'Reboot to run it.');
});

test.serial('tmux: Ctrl-C mid-download shows the cancelling line (never overwritten), clears the bar, exits STAGE_FAILED; slots untouched', async (t) => {
  const { host, env } = await daemonHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const held = await holdLayerDownload(t, reg.url, layer);
  const inv = cosctlInvocation(host, ['upgrade', '--no-verify', '--image', `${held.proxy.host}/cos/os:v2`], env);
  const term = await inTmux(t, inv.argv, inv.env);
  await held.downloading();
  await term.until(/\[5\/6\] downloading/);
  await term.keys('C-c');
  const end = await term.until(/EXIT=\d+/);
  held.release();
  t.regex(end, new RegExp(`EXIT=${EXIT_CODES.STAGE_FAILED.exit}\\b`), end);
  t.regex(end, /^cosctl: SIGINT: cancelling the upgrade \(it stops before the slot switch and cleans up\); SIGINT again to quit at once$/m, `the whole line, wider than the window:\n${end}`);
  t.false(end.split('\n').some((l) => BAR.test(l)), `no bar frame is left after the failure:\n${end}`);
  const lines = end.split('\n').filter((l) => l.trim() !== '');
  const note = lines.findIndex((l) => l.startsWith('cosctl: SIGINT: cancelling'));
  t.true(note >= 0 && lines.slice(note + 1).some((l) => /^cosctl: .*cancel/i.test(l)), `the outcome follows the note:\n${end}`);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});
