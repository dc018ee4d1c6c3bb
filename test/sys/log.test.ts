/**
 * The log formats: cosd's journal lines carry their syslog priority prefix (journald's SyslogLevelPrefix turns it
 * into PRIORITY, so `journalctl -p warning` selects them; the VM agent scenario checks that on a real journald), and
 * cosctl --verbose writes readable lines instead of raw JSON.
 */
import test from 'ava';
import { sink } from '../helpers/sink.ts';
import { createLogger, readableLine, syslogPriority, withPriorityPrefix } from '../../src/sys/log.ts';

const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

test('pino levels map to syslog priorities: fatal 2, error 3, warn 4, info 6, debug and trace 7', (t) => {
  t.deepEqual([60, 50, 40, 30, 20, 10].map(syslogPriority), [2, 3, 4, 6, 7, 7]);
  t.is(withPriorityPrefix('{"level":40,"time":1,"msg":"x"}'), '<4>{"level":40,"time":1,"msg":"x"}');
  t.is(withPriorityPrefix('not json'), 'not json', 'a line that is not pino\'s is passed on as it is');
});

test('a journal logger prefixes every line with its priority, the JSON (message and fields) intact after it', async (t) => {
  const out = sink();
  const log = createLogger({ level: 'debug', destination: out.stream, format: 'journal' });
  log.warn({ transaction: 'tx-1', code: 'VERIFY_FAILED' }, 'signature verification is disabled');
  log.error({ transaction: 'tx-1', digest: 'sha256:ab' }, 'job failed');
  log.info({}, 'starting');
  log.debug({ argv: ['blkid'] }, 'run');
  await flush();
  const lines = out.text().split('\n').filter(Boolean);
  t.deepEqual(lines.map((l) => l.slice(0, 3)), ['<4>', '<3>', '<6>', '<7>']);
  const first = JSON.parse(lines[0]!.slice(3)) as Record<string, unknown>;
  t.like(first, { msg: 'signature verification is disabled', transaction: 'tx-1', code: 'VERIFY_FAILED' });
  t.like(JSON.parse(lines[1]!.slice(3)), { msg: 'job failed', digest: 'sha256:ab' });
});

test('cosctl --verbose lines are readable: time, level, message, then key=value fields (quoted when needed)', async (t) => {
  t.is(readableLine('{"level":40,"time":0,"name":"cos-agent","msg":"retrying","attempt":2,"image":"reg/os:v1","why":"connection refused"}'),
    '00:00:00.000 WARN  retrying  attempt=2 image=reg/os:v1 why="connection refused"\n');
  const out = sink();
  const log = createLogger({ level: 'debug', destination: out.stream, format: 'readable' });
  log.info({ step: 'pull' }, 'step started');
  await flush();
  t.regex(out.text(), /^\d\d:\d\d:\d\d\.\d{3} INFO  step started {2}step=pull\n$/);
  t.false(out.text().includes('{'), 'no raw JSON');
});
