import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AGENT_CONFIG_FILE, loadAgentSettings, parseAgentSettings, parseDuration } from '../../src/config/agent-settings.ts';
import { ConfigError } from '../../src/model/errors.ts';
import { DEFAULT_AGENT_SETTINGS } from '../../src/model/schedule.ts';
import { SysRoot } from '../../src/sys/root.ts';

const FULL = `apiVersion: io.costoolkit.agent/v1
schedule: "30 4 * * mon-fri"
timeZone: America/New_York
randomDelay: 1h30m
policy: apply
window:
  days: [Sunday, sat, sat]
  start: "02:00"
  length: 2h
  timeZone: Europe/Berlin
inhibitors: [/run/maint, /etc/maint]
`;

async function tempRoot(t: { teardown(fn: () => Promise<void>): void }): Promise<SysRoot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-settings-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return new SysRoot(dir);
}

test('when agent.yaml is missing, the defaults apply: policy check, daily at 03:00 with up to 2h random delay, the two inhibitor files', async (t) => {
  const root = await tempRoot(t);
  const { settings, file } = await loadAgentSettings(root);
  t.is(file, undefined);
  t.deepEqual(settings, DEFAULT_AGENT_SETTINGS);
  t.is(settings.policy, 'check');
  t.is(settings.schedule, '0 3 * * *');
  t.is(settings.timeZone, 'UTC');
  t.is(settings.randomDelayMs, 2 * 3600_000);
  t.is(settings.window, undefined);
  t.deepEqual(settings.inhibitors, ['/run/cos-agent/inhibit', '/etc/cos-agent/inhibit']);
});

test('when agent.yaml is empty, the defaults apply', (t) => {
  t.deepEqual(parseAgentSettings('', 'agent.yaml'), DEFAULT_AGENT_SETTINGS);
  t.deepEqual(parseAgentSettings('# only a comment\n', 'agent.yaml'), DEFAULT_AGENT_SETTINGS);
});

test('a complete agent.yaml is read field by field, with weekdays normalised and sorted', (t) => {
  const s = parseAgentSettings(FULL, 'agent.yaml');
  t.is(s.schedule, '30 4 * * mon-fri');
  t.is(s.timeZone, 'America/New_York');
  t.is(s.randomDelayMs, 90 * 60_000);
  t.is(s.policy, 'apply');
  t.deepEqual(s.window, { days: ['sun', 'sat'], start: '02:00', startMinute: 120, lengthMs: 2 * 3600_000, timeZone: 'Europe/Berlin' });
  t.deepEqual(s.inhibitors, ['/run/maint', '/etc/maint']);
});

test('the window takes the top-level time zone when it names none, and every day when it lists none', (t) => {
  const s = parseAgentSettings('timeZone: Asia/Tokyo\nwindow:\n  start: 23:30\n  length: 90m\n', 'agent.yaml');
  t.deepEqual(s.window, { days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '23:30', startMinute: 23 * 60 + 30, lengthMs: 90 * 60_000, timeZone: 'Asia/Tokyo' });
  t.is(parseAgentSettings('window:\n  start: "00:00"\n  length: 1h\n', 'agent.yaml').window?.timeZone, 'UTC');
});

test('node-cron nicknames and six-field expressions are accepted schedules, and randomDelay 0 disables the delay', (t) => {
  t.is(parseAgentSettings('schedule: "@daily"\n', 'a').schedule, '@daily');
  t.is(parseAgentSettings('schedule: "0 */15 * * * *"\n', 'a').schedule, '0 */15 * * * *');
  t.is(parseAgentSettings('randomDelay: 0\n', 'a').randomDelayMs, 0);
  t.is(parseAgentSettings('randomDelay: "0"\n', 'a').randomDelayMs, 0);
  for (const policy of ['none', 'check', 'stage', 'apply'] as const) t.is(parseAgentSettings(`policy: ${policy}\n`, 'a').policy, policy);
});

test('durations combine units and refuse what has none', (t) => {
  t.is(parseDuration('2h'), 7_200_000);
  t.is(parseDuration('90m'), 5_400_000);
  t.is(parseDuration('1h30m'), 5_400_000);
  t.is(parseDuration('1h 30m 15s'), 5_415_000);
  t.is(parseDuration('1.5h'), 5_400_000);
  t.is(parseDuration('250ms'), 250);
  t.is(parseDuration('1d'), 86_400_000);
  t.is(parseDuration(0), 0);
  t.is(parseDuration('0'), 0);
  for (const bad of ['', '2', '2x', 'h', '2h junk', '-1h', 'PT2H']) t.is(parseDuration(bad), undefined, bad);
  t.is(parseDuration(5), undefined);
});

const bad: Array<[string, string, number | undefined, string | undefined]> = [
  ['an invalid cron expression', 'policy: check\nschedule: "61 3 * * *"\n', 2, 'schedule'],
  ['a cron expression with too few fields', 'schedule: "0 3 *"\n', 1, 'schedule'],
  ['an unknown policy', 'policy: reboot\n', 1, 'policy'],
  ['an unknown top-level key', 'schedule: "0 3 * * *"\npolcy: stage\n', 2, 'polcy'],
  ['an unknown time zone', 'timeZone: Mars/Olympus\n', 1, 'timeZone'],
  ['a random delay without unit', 'randomDelay: 7200\n', 1, 'randomDelay'],
  ['a random delay over 24h', 'randomDelay: 25h\n', 1, 'randomDelay'],
  ['a window that is no mapping', 'window: weekends\n', 1, 'window'],
  ['a window start that is no time', 'window:\n  start: "25:00"\n  length: 1h\n', 2, 'window.start'],
  ['a window without length', 'window:\n  start: "02:00"\n', 2, 'window.length'],
  ['a zero window length', 'window:\n  start: "02:00"\n  length: 0\n', 3, 'window.length'],
  ['a window longer than a week', 'window:\n  start: "02:00"\n  length: 8d\n', 3, 'window.length'],
  ['an unknown weekday', 'window:\n  days: [sat, sonntag]\n  start: "02:00"\n  length: 1h\n', 2, 'window.days[1]'],
  ['an empty days list', 'window:\n  days: []\n  start: "02:00"\n  length: 1h\n', 2, 'window.days'],
  ['an unknown window key', 'window:\n  start: "02:00"\n  length: 1h\n  end: "04:00"\n', 4, 'window.end'],
  ['an unknown window time zone', 'window:\n  start: "02:00"\n  length: 1h\n  timeZone: CEST+2\n', 4, 'window.timeZone'],
  ['a relative inhibitor path', 'inhibitors:\n  - /run/x\n  - inhibit\n', 3, 'inhibitors[1]'],
  ['inhibitors that are no list', 'inhibitors: /run/x\n', 1, 'inhibitors'],
  ['a top level that is a list', '- policy: check\n', 1, '(top)'],
  ['broken YAML', 'policy: check\nwindow: [\n', 3, undefined],
];

for (const [what, text, line, key] of bad) {
  test(`when agent.yaml has ${what}, it throws CONFIG_INVALID naming the file${line !== undefined ? `, line ${line}` : ''}${key !== undefined ? ` and ${key}` : ''}`, (t) => {
    const err = t.throws(() => parseAgentSettings(text, '/etc/cos-agent/agent.yaml'), { instanceOf: ConfigError });
    t.is(err?.code, 'CONFIG_INVALID');
    t.is(err?.file, '/etc/cos-agent/agent.yaml');
    if (line !== undefined) t.is(err?.line, line);
    else t.is(typeof err?.line, 'number');
    t.is(err?.key, key);
    t.true(err?.message.startsWith(`/etc/cos-agent/agent.yaml:${err.line}`));
  });
}

test('the loader reads agent.yaml through the root and names the root-mapped file in its errors', async (t) => {
  const root = await tempRoot(t);
  const file = root.path(AGENT_CONFIG_FILE);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, '\uFEFFpolicy: stage\nrandomDelay: 10m\n');
  const good = await loadAgentSettings(root);
  t.is(good.file, file);
  t.is(good.settings.policy, 'stage');
  t.is(good.settings.randomDelayMs, 600_000);

  await writeFile(file, 'policy: stage\nrandomDelay: soon\n');
  const err = await t.throwsAsync(loadAgentSettings(root), { instanceOf: ConfigError });
  t.is(err?.file, file);
  t.is(err?.line, 2);
  t.is(err?.key, 'randomDelay');
});

test('when agent.yaml cannot be read (it is a directory), the loader throws CONFIG_INVALID naming it', async (t) => {
  const root = await tempRoot(t);
  await mkdir(root.path(AGENT_CONFIG_FILE), { recursive: true });
  const err = await t.throwsAsync(loadAgentSettings(root), { instanceOf: ConfigError });
  t.is(err?.code, 'CONFIG_INVALID');
  t.is(err?.file, root.path(AGENT_CONFIG_FILE));
});
