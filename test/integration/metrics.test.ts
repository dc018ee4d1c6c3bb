/**
 * cosd's node_exporter textfile (src/daemon/metrics-file.ts) read by Debian's real prometheus-node-exporter and scraped
 * over HTTP on 127.0.0.1: the values before and after an upgrade through cosd, after a failed check, and on a host
 * that is a boot-assessment fallback; node_exporter reports no textfile parse error (node_textfile_scrape_error 0).
 */
import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { daemonHost } from '../helpers/daemon-host.ts';
import { cosctl } from '../helpers/cosctl.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { sample, startNodeExporter, type Sample } from '../helpers/node-exporter.ts';

let reg: TestRegistry;
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

/** Scrapes until `ok` holds (cosd writes on the change, the collector reads at each scrape), at most 20 s. */
async function scrapeUntil(scrape: () => Promise<Sample[]>, ok: (s: Sample[]) => boolean): Promise<Sample[]> {
  let last: Sample[] = [];
  for (let i = 0; i < 200; i++) {
    last = await scrape();
    if (ok(last)) return last;
    await sleep(100);
  }
  return last;
}

const value = (s: Sample[], name: string, labels: Record<string, string> = {}): number | undefined => sample(s, name, labels)?.value;

test.serial('node_exporter serves the agent\'s metrics: the booted image, then the upgrade on trial, then a failed check', async (t) => {
  const file = '/srv/metrics/cos_agent.prom';
  const { host, env } = await daemonHost(t, {}, ['--metrics-file', file]);
  const dir = path.dirname(path.join(host.root, file));
  const ne = await startNodeExporter(t, dir);

  let s = await scrapeUntil(ne.scrape, (x) => value(x, 'cos_agent_info') === 1);
  t.is(value(s, 'node_textfile_scrape_error'), 0, 'node_exporter parsed the file');
  t.is(value(s, 'cos_agent_status_read_ok'), 1);
  t.is(value(s, 'cos_agent_update_available'), undefined, 'no check of the configured image yet: not known, not 0');
  t.is(value(s, 'cos_agent_booted_slot', { slot: 'active' }), 1);
  t.is(value(s, 'cos_agent_booted_slot', { slot: 'passive' }), 0);
  t.is(value(s, 'cos_agent_next_boot_slot', { slot: 'active' }), 1);
  t.is(value(s, 'cos_agent_slot_present', { slot: 'recovery' }), 1);
  t.is(value(s, 'cos_agent_boot_assessment_armed'), 0);
  t.is(value(s, 'cos_agent_upgrade_failure'), 0);
  t.is(value(s, 'cos_agent_last_upgrade_success'), undefined, 'no upgrade yet: no value rather than a false 0');
  t.is(sample(s, 'cos_agent_image_info', { role: 'staged' }), undefined, 'nothing staged');

  const up = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`], env);
  t.is(up.code, 0, up.stderr);
  s = await scrapeUntil(ne.scrape, (x) => value(x, 'cos_agent_last_upgrade_success') !== undefined && sample(x, 'cos_agent_image_info', { role: 'staged' }) !== undefined);
  t.is(value(s, 'node_textfile_scrape_error'), 0);
  t.is(value(s, 'cos_agent_last_upgrade_success'), 1);
  const staged = sample(s, 'cos_agent_image_info', { role: 'staged' });
  t.like(staged?.labels, { slot: 'active', version: '2.0.0', verification: 'skipped' });
  t.regex(staged?.labels.digest ?? '', /^sha256:[0-9a-f]{64}$/);
  t.regex(staged?.labels.image ?? '', /cos\/os:v2$/);
  t.like(sample(s, 'cos_agent_image_info', { role: 'booted' })?.labels, { slot: 'passive', version: '0.8.10' }, 'the running image, rotated to passive');
  t.is(value(s, 'cos_agent_boot_assessment_armed'), 1, 'the upgrade is on trial');
  t.true((value(s, 'cos_agent_boot_assessment_tries_left') ?? 0) > 0);
  t.true((value(s, 'cos_agent_last_upgrade_duration_seconds') ?? -1) >= 0);
  t.true(Math.abs((value(s, 'cos_agent_last_upgrade_timestamp_seconds') ?? 0) - Date.now() / 1000) < 300);

  const check = await cosctl(host, ['check', '--image', '127.0.0.1:1/cos/os:v9'], env);
  t.not(check.code, 0);
  s = await scrapeUntil(ne.scrape, (x) => value(x, 'cos_agent_last_check_success') !== undefined);
  t.is(value(s, 'cos_agent_last_check_success'), 0);
  const err = s.find((x) => x.name === 'cos_agent_last_check_error');
  t.truthy(err?.labels.code, 'the failed check\'s error code');
  t.is(value(s, 'cos_agent_last_upgrade_success'), 1, 'the upgrade\'s values stay');
  t.is(value(s, 'cos_agent_update_available'), undefined, 'a check of another image says nothing about the configured one');
  // The file is replaced whole: no temp file is left beside it for the collector to read.
  t.deepEqual(await readdir(dir), ['cos_agent.prom']);
  t.notRegex(await readFile(path.join(dir, 'cos_agent.prom'), 'utf8'), /transaction/, 'no transaction id anywhere');
});

test.serial('a boot-assessment fallback: upgrade_failure 1 and the slot it runs from; the default path is used where its directory exists', async (t) => {
  const dir = '/var/lib/node_exporter/textfile_collector';
  const { host } = await daemonHost(t, { booted: 'passive', upgradeFailure: true, files: { [`${dir}/other.prom`]: 'other_metric 7\n' } });
  const ne = await startNodeExporter(t, path.join(host.root, dir));
  const s = await scrapeUntil(ne.scrape, (x) => value(x, 'cos_agent_info') === 1);
  t.is(value(s, 'node_textfile_scrape_error'), 0);
  t.is(value(s, 'cos_agent_upgrade_failure'), 1);
  t.is(value(s, 'cos_agent_booted_slot', { slot: 'passive' }), 1);
  t.is(value(s, 'other_metric'), 7, 'the other textfiles in the directory are untouched');
});
