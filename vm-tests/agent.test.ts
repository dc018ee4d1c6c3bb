/**
 * The real agent in a real boot: a cOS disk whose slot images are Debian + systemd + dbus with cos-agent installed
 * from the package tarball exactly as a derivative image installs it (packaging/Dockerfile.snippet: the tarball
 * unpacked at /, then `systemctl enable` of the units its RUN line names, done with `systemctl --root` on the tree).
 * COS_OEM is mounted at /oem and COS_PERSISTENT at /usr/local (fstab), COS_STATE read-only at
 * /run/initramfs/cos-state by the initrd, as on a cOS host.
 *
 * 1. first boot under boot assessment: before the boot the host arms it on the disk (COS_STATE/boot_assessment:
 *    enable_boot_assessment=yes, boot_assessment_tries=3) and the disk carries the agent's own grub_boot_assessment
 *    (bootAssessmentScript()) in place of cOS's, so GRUB counts the try down (tries=2, saved before the kernel runs)
 *    and boots active tentatively. cOS's 08_boot_assessment `boot.before` yip stage is not in this guest: only the
 *    agent's health check (cos-agent-healthcheck.service -> `cosctl health-check`, whose shipped check asks cosd on
 *    the bus) can disarm it. The guest reports (lib/agent.ts): cosd under systemd and its start timestamps, its idle
 *    RSS, the `cosctl status --json` document and the health-check unit's result; after the guest powered off the
 *    host reads COS_STATE/boot_assessment on the disk image: marked good = enable_boot_assessment empty, the
 *    countdown cleared.
 * 3. at the end of the same boot, the idle exit under systemd (the scenario's cosd was resident: vm-tests/lib/agent.ts
 *    RESIDENT_COSD): switched to --idle-exit 3, cosd leaves, arms cos-agent-wake.timer for the schedule's next run,
 *    and is started again by a call (bus activation through systemd) and by a config write (cos-agent-config.path).
 * 2. in the same boot, the yip stages run by the agent from cOS's cos-setup units (the snippet enables them): the
 *    image's /system/oem/50_cosvm.yaml (boot: a hostname, a user with an authorized key) and COS_OEM's
 *    /oem/60_cosvm.yaml (boot: a file; network: a sysctl and a file), checked from the host in the guest's report.
 */
import './lib/timing.ts';
import test from 'ava';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { agentDiskOptions, agentPackage, agentReporter, dockerfileEnabledUnits, parseJournalJson, type AgentPackage } from './lib/agent.ts';
import { buildCosDisk, cloneDisk, type CosDisk } from './lib/disk.ts';
import { readGrubEnv, STATE_BOOT_ASSESSMENT, writeGrubEnv } from './lib/grubenv.ts';
import { bootReport, bootVm, killAllVms, logDir, markerJson } from './lib/qemu.ts';

const BOOT_TIMEOUT_MS = 300_000;

/** An ed25519 public key (test data, no private key exists for it). */
const COSVM_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM7d8bJ7Q1m5mFf3Q0cT1c6f0m0cosvmTESTkeyOnly0 cosvm@vm-tests';

/** The image's own cloud-config (/system/oem), as a derivative ships it. */
const SYSTEM_OEM = `name: "cos-agent VM test: the image's cloud-config"
stages:
  boot:
    - name: hostname and a user with a key
      hostname: cosvm-yip
      users:
        cosvm:
          passwd: cosvm
          groups: [users]
          ssh_authorized_keys:
            - ${COSVM_KEY}
`;

/** The host's cloud-config on COS_OEM (/oem), as an installer or operator writes it. */
const OEM = `stages:
  boot:
    - name: a file from /oem
      files:
        - path: /etc/cosvm-from-oem
          content: "written by cos-agent from /oem at boot\\n"
          permissions: 0640
  network:
    - name: a sysctl once the network is up
      sysctl:
        vm.swappiness: "13"
      files:
        - path: /run/cosvm-network-stage
          content: "network stage ran"
`;

let disk: CosDisk;
let pkg: AgentPackage;
let enabled: string[] = [];
let buildSeconds = 0;

test.before(async (t) => {
  t.timeout(40 * 60_000, 'building the package and the cOS disk (debootstrap on a cold cache)');
  const t0 = Date.now();
  pkg = await agentPackage((l) => t.log(l));
  enabled = await dockerfileEnabledUnits({ yipStages: true });
  const reporter = agentReporter();
  disk = await buildCosDisk({
    ...agentDiskOptions(pkg.path, enabled, reporter, [{ path: '/system/oem/50_cosvm.yaml', content: SYSTEM_OEM, mode: 0o600 }]),
    oemFiles: [{ path: '60_cosvm.yaml', text: OEM }],
  });
  buildSeconds = (Date.now() - t0) / 1000;
  t.log(`package ${path.relative(process.cwd(), pkg.path)} sha256 ${pkg.sha256.slice(0, 16)}… (${pkg.built === null ? 'up to date in dist/' : `built: ${pkg.built}`}, ${pkg.seconds.toFixed(1)} s); enabled: ${enabled.join(' ')}; disk ${disk.key} ready after ${buildSeconds.toFixed(1)} s`);
});

test.after.always(() => {
  killAllVms();
});

type Json = Record<string, unknown>;

const obj = (v: unknown): Json => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {});

test('first boot under boot assessment: cosd runs under systemd, status says active, the health check marks the boot good', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 120_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-agent-first-boot-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(disk.path, path.join(work, 'disk.img'));

  // arm boot assessment the way an upgrade leaves it: the next boot of active is assessed, with 3 tries
  t.deepEqual(
    await writeGrubEnv(image, { enable_boot_assessment: 'yes', boot_assessment_tries: '3' }, STATE_BOOT_ASSESSMENT),
    { enable_boot_assessment: 'yes', boot_assessment_tries: '3' },
  );

  const b = await bootVm({ disk: image, workDir: work, name: 'agent-first-boot', timeoutMs: BOOT_TIMEOUT_MS, memMiB: 1024 });
  const report = bootReport(b, 120);
  t.log(`boot: ${(b.durationMs / 1000).toFixed(1)} s, serial log ${b.logPath}`);
  const byKind = new Map<string, Json>();
  for (const r of b.results) byKind.set(String(r['kind']), r);
  const missing = ['env-before', 'cosd', 'rss', 'status', 'healthcheck', 'yip', 'idle', 'cosd-journal', 'done'].filter((k) => !byKind.has(k));
  if (b.timedOut || missing.length > 0) t.fail(`the guest did not report ${missing.join(', ') || '(timed out)'}\n${report}`);
  const envBefore = obj(byKind.get('env-before'));
  const cosd = obj(byKind.get('cosd'));
  const rss = obj(byKind.get('rss'));
  const status = obj(byKind.get('status'));
  const health = obj(byKind.get('healthcheck'));
  const journal = parseJournalJson(String(obj(byKind.get('cosd-journal'))['json'] ?? ''));
  const cosdJournal = journal.map((l) => `[${(l.monotonicUs / 1e6).toFixed(3)}] ${l.message}`).join('\n');
  const done = obj(byKind.get('done'));
  const nodeBaselineMs = Number(obj(byKind.get('node-baseline'))['us']) / 1000;
  const diag = `${report}\n--- cosd journal (guest) ---\n${cosdJournal}\n--- health check journal (guest) ---\n${String(health['journal'] ?? '')}\n--- cosctl status stderr ---\n${String(status['stderr'] ?? '')}`;

  // GRUB took the assessed boot of active: the entry and the countdown it saved before the kernel ran
  const grub = Object.assign({}, ...markerJson(b.serial, 'COSVM-GRUB')) as Json;
  t.is(grub['selected_entry'], '', `no one-shot entry: the assessed default entry\n${report}`);
  t.deepEqual(obj(envBefore['vars']), { enable_boot_assessment: 'yes', boot_assessment_tries: '2' }, `GRUB counted the try down (3 -> 2) before the boot\n${report}`);

  // (a) cosd under systemd
  t.is(cosd['active'], 'active', `cosd.service active\n${diag}`);
  t.is(cosd['nRestarts'], 0, `cosd never restarted\n${diag}`);
  const mainPid = Number(cosd['mainPid']);
  t.true(mainPid > 0, diag);
  const execStart = Number(cosd['execMainStartUs']);
  const activeEnter = Number(cosd['activeEnterUs']);
  const inactiveExit = Number(cosd['inactiveExitUs']);
  t.true(execStart > 0 && activeEnter >= execStart, `systemd timestamps of cosd\n${JSON.stringify(cosd)}\n${diag}`);
  const startMs = (activeEnter - execStart) / 1000;
  // cosd's lines reach the journal with their priority (the <N> prefix journald strips): info lines at 6, none
  // carrying a raw prefix in its message, so `journalctl -p warning -u cosd` selects its warnings and errors only.
  const own = journal.filter((l) => l.msg !== undefined);
  t.true(own.length > 0, `cosd's JSON lines are in the journal\n${diag}`);
  t.is(own.find((l) => l.msg === 'starting')?.priority, 6, `"starting" is an info entry (PRIORITY 6)\n${diag}`);
  t.false(journal.some((l) => /^<\d>/.test(l.message)), `no message keeps its priority prefix\n${diag}`);
  for (const l of own) {
    const level = Number((JSON.parse(l.message) as { level?: number }).level);
    t.is(l.priority, level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7, `${l.msg}: PRIORITY from its pino level ${level}`);
  }
  // where the start goes: cosd's own log lines (pino msg) by their journal monotonic time, from ExecMainStart
  const milestones: Record<string, number> = {};
  for (const l of journal) if (l.msg !== undefined && !(l.msg in milestones)) milestones[l.msg] = Math.round((l.monotonicUs - execStart) / 1000);

  // (b) idle RSS
  const samples = Array.isArray(rss['vmRssKb']) ? (rss['vmRssKb'] as unknown[]).map(Number) : [];
  t.is(rss['pid'], mainPid, `RSS read from cosd's MainPID\n${JSON.stringify(rss)}`);
  t.true(samples.length === 3 && samples.every((n) => Number.isFinite(n) && n > 0), `VmRSS samples ${JSON.stringify(rss)}\n${diag}`);
  const idleRssMiB = (samples[samples.length - 1] ?? 0) / 1024;

  // (c) the status document
  t.is(status['exit'], 0, `cosctl status --json exit code\n${diag}`);
  let doc: Json = {};
  try {
    doc = obj(JSON.parse(String(status['stdout'] ?? '')));
  } catch (e) {
    t.fail(`cosctl status --json printed no JSON document (${(e as Error).message}): ${String(status['stdout']).slice(0, 2000)}\n${diag}`);
  }
  const st = obj(doc['status']);
  t.is(doc['kind'], 'CosHost', `${JSON.stringify(doc).slice(0, 3000)}`);
  t.is(st['bootedFrom'], 'active', `status.bootedFrom\n${JSON.stringify(st)}\n${diag}`);
  t.is(obj(st['booted'])['slot'], 'active', `status.booted.slot\n${JSON.stringify(st['booted'])}`);
  t.is(obj(obj(st['slots'])['active'])['label'], 'COS_ACTIVE', `status.slots.active.label\n${JSON.stringify(st['slots'])}`);
  t.is(obj(st['nextBoot'])['entry'], 'cos', `status.nextBoot.entry\n${JSON.stringify(st['nextBoot'])}`);
  t.deepEqual(st['bootAssessment'], { enabled: false, tentative: false, triesLeft: null }, `status.bootAssessment after the health check marked the boot good\n${JSON.stringify(st['bootAssessment'])}`);

  // (d) the health-check unit
  t.is(health['result'], 'success', `cos-agent-healthcheck.service Result\n${diag}`);
  t.is(health['execMainStatus'], 0, `cos-agent-healthcheck.service ExecMainStatus\n${diag}`);
  t.is(health['active'], 'active', `RemainAfterExit: active (exited) after a good boot\n${diag}`);
  t.is(done['target'], 'active', `multi-user.target\n${diag}`);
  t.is(done['failed'], '', `no failed units\n${diag}`);
  t.true(b.exitCode === 0 && !b.timedOut, `the guest powered off by itself\n${report}`);

  // (f) the yip stages of the cos-setup units, run by the agent from /system/oem and /oem
  const yip = obj(byKind.get('yip'));
  const yipDiag = `${JSON.stringify({ ...yip, journal: undefined })}\n--- cos-setup journal (guest) ---\n${String(yip['journal'] ?? '')}\n${report}`;
  t.deepEqual(String(yip['units'] ?? '').trim().split('\n'), [
    'cos-setup-fs active success 0', 'cos-setup-boot active success 0', 'cos-setup-network inactive success 0',
  ], `the cos-setup units ran cosctl run-stage fs, boot and network with exit 0\n${yipDiag}`);
  t.is(yip['hostname'], 'cosvm-yip', `hostname set live by the boot stage\n${yipDiag}`);
  t.is(yip['etcHostname'], 'cosvm-yip', `/etc/hostname\n${yipDiag}`);
  const passwd = String(yip['passwd'] ?? '').split(':');
  t.deepEqual([passwd[0], passwd[5], passwd[6]], ['cosvm', '/home/cosvm', '/bin/sh'], `the user cosvm\n${yipDiag}`);
  t.true(Number(passwd[2]) >= 1000, `a regular uid: ${passwd[2] ?? ''}`);
  t.regex(String(yip['group'] ?? ''), /^cosvm:x:\d+:(cosvm)?$/, `the user's own group\n${yipDiag}`);
  t.is(yip['keys'], COSVM_KEY, `~cosvm/.ssh/authorized_keys\n${yipDiag}`);
  t.is(yip['keysStat'], 'cosvm cosvm 600', `owned by the user, 0600\n${yipDiag}`);
  t.is(yip['oemFile'], 'written by cos-agent from /oem at boot', `the /oem file\n${yipDiag}`);
  t.is(yip['oemFileStat'], 'root 640', `its mode\n${yipDiag}`);
  t.is(yip['swappiness'], '13', `the network stage's sysctl\n${yipDiag}`);
  t.is(yip['network'], 'network stage ran', `the network stage's file\n${yipDiag}`);

  // (g) idle exit under systemd: cosd leaves (exit 0, success), the schedule (the default policy check, 03:00 UTC)
  // goes to the transient cos-agent-wake.timer, a call starts it again through the bus, and so does a config write
  const idle = obj(byKind.get('idle'));
  const idleDiag = `${JSON.stringify(idle)}\n${diag}`;
  t.is(idle['left'], 'inactive success 0', `cosd left by itself, exit 0\n${idleDiag}`);
  t.regex(String(idle['wakeNext']), /^\w{3} (\d{4}-\d{2}-\d{2}) 03:00:00 UTC$/, `the wake timer's next elapse\n${idleDiag}`);
  t.is(idle['wakeActive'], 'active', `cos-agent-wake.timer waits\n${idleDiag}`);
  t.regex(String(idle['wakeUnit']), /argv\[\]=\S*systemctl start cosd\.service/, `the wake starts cosd.service\n${idleDiag}`);
  const wakeAt = String(obj(JSON.parse(String(idle['wakeRecord'] || '{}')))['at'] ?? '');
  t.regex(wakeAt, /T03:00:00\.000Z$/, `/run/cos-agent/wake.json\n${idleDiag}`);
  t.is(wakeAt.slice(0, 10), /(\d{4}-\d{2}-\d{2})/.exec(String(idle['wakeNext']))?.[1] ?? '', 'the record and the timer name the same instant');
  t.true(Date.parse(wakeAt) > Date.parse(String(idle['now'])) && Date.parse(wakeAt) - Date.parse(String(idle['now'])) <= 86_400_000, `the next 03:00 UTC after now\n${idleDiag}`);
  t.is(idle['callExit'], 0, `a GetStatus call activated cosd\n${idleDiag}`);
  t.is(idle['called'], 'active', idleDiag);
  t.not(idle['pid2'], idle['pid1'], 'a new process');
  t.is(idle['again'], 'inactive', `and it left again\n${idleDiag}`);
  t.is(idle['pathActive'], 'active', `cos-agent-config.path is enabled and waiting\n${idleDiag}`);
  t.is(idle['byPath'], 'active', `a config write started cosd\n${idleDiag}`);
  t.not(idle['pid3'], idle['pid2']);
  t.true(journal.filter((l) => l.msg === 'idle: leaving; a call, the schedule\'s timer or a config change starts cosd again').length >= 2, `cosd said why it left\n${diag}`);

  // (e) on the disk, after power-off: the health check's mark-good disarmed boot assessment and cleared the countdown
  const after = await readGrubEnv(image, STATE_BOOT_ASSESSMENT);
  t.is(after['enable_boot_assessment'] ?? '', '', `COS_STATE/boot_assessment after the boot: ${JSON.stringify(after)}`);
  t.is(after['boot_assessment_tries'] ?? '', '', `the countdown cleared by mark-good: ${JSON.stringify(after)}`);
  t.not(after['boot_assessment_tentative'], 'yes', JSON.stringify(after));

  const wallSeconds = (Date.now() - t0) / 1000;
  const summary = {
    scenario: 'agent first boot',
    package: { file: path.basename(pkg.path), sha256: pkg.sha256, built: pkg.built },
    disk: disk.key,
    cosdStartMs: startMs,
    cosdStartMilestonesMs: milestones,
    hostLoadAvg: loadavg(),
    cosdExecMainStartSinceBootS: execStart / 1e6,
    cosdActiveSinceBootS: activeEnter / 1e6,
    cosdInactiveExitSinceBootS: inactiveExit / 1e6,
    cosdIdleRssKb: samples,
    cosdVmHwmKb: rss['vmHwmKb'],
    rssReadAfterActiveS: Number(rss['sinceActiveUs']) / 1e6,
    nodeBareStartMs: nodeBaselineMs,
    statusCallMs: Number(status['us']) / 1000,
    idleLeftAfterMs: Number(idle['leftUs']) / 1000,
    activationCallMs: Number(idle['callUs']) / 1000,
    pathStartMs: Number(idle['pathUs']) / 1000,
    healthCheckMs: (Number(health['execMainExitUs']) - Number(health['execMainStartUs'])) / 1000,
    bootAssessmentBefore: envBefore['vars'],
    bootAssessmentAfter: after,
    bootSeconds: b.durationMs / 1000,
    scenarioWallSeconds: wallSeconds,
    setupSeconds: buildSeconds,
    serialLog: b.logPath,
  };
  t.log(`cosd start (ExecMainStart -> active, bus name taken): ${startMs.toFixed(0)} ms; started ${(execStart / 1e6).toFixed(2)} s after boot, active at ${(activeEnter / 1e6).toFixed(2)} s`);
  t.log(`cosd log lines, ms after ExecMainStart: ${Object.entries(milestones).map(([m, ms]) => `${m} +${ms}`).join(', ')} (a bare \`node -e 0\` of the package's runtime takes ${nodeBaselineMs.toFixed(0)} ms in this guest; host load average ${loadavg().map((x) => x.toFixed(1)).join(' ')})`);
  t.log(`cosd idle RSS ${idleRssMiB.toFixed(1)} MiB (VmRSS kB ${samples.join(', ')}, ${(Number(rss['sinceActiveUs']) / 1e6).toFixed(1)} s after active; VmHWM ${String(rss['vmHwmKb'])} kB)`);
  t.log(`cosctl status --json: ${(Number(status['us']) / 1000).toFixed(0)} ms; health check: ${summary.healthCheckMs.toFixed(0)} ms; boot ${summary.bootSeconds.toFixed(1)} s; scenario wall ${wallSeconds.toFixed(1)} s (+ setup ${buildSeconds.toFixed(1)} s)`);
  t.log(`idle exit: cosd (--idle-exit 3) left ${(summary.idleLeftAfterMs / 1000).toFixed(1)} s after its restart; a GetStatus that activated it answered in ${summary.activationCallMs.toFixed(0)} ms; a config write had it active after ${summary.pathStartMs.toFixed(0)} ms; wake timer: ${String(idle['wakeNext'])}`);
  t.log(`boot_assessment before the agent ${JSON.stringify(envBefore['vars'])}, after power-off ${JSON.stringify(after)}`);
  const summaryFile = path.join(logDir(), 'agent-first-boot-summary.json');
  await mkdir(logDir(), { recursive: true });
  await writeFile(summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  t.log(`summary: ${summaryFile}`);
  const analyze = obj(byKind.get('analyze'));
  // The slowest services of the boot (start -> active, or -> exit for a oneshot), from systemctl show.
  const spans = String(analyze['units'] ?? '').split('\n\n').map((block) => {
    const p = Object.fromEntries(block.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const start = Number(p['InactiveExitTimestampMonotonic'] ?? 0);
    const end = Math.max(Number(p['ActiveEnterTimestampMonotonic'] ?? 0), Number(p['ExecMainExitTimestampMonotonic'] ?? 0));
    return { id: String(p['Id'] ?? '?'), start: start / 1e6, ms: start > 0 && end > start ? (end - start) / 1000 : 0 };
  }).filter((u) => u.ms > 0).sort((a, b) => b.ms - a.ms).slice(0, 15);
  t.log(`slowest services (start s after boot: ms): ${spans.map((u) => `${u.id} ${u.start.toFixed(1)}: ${u.ms.toFixed(0)}`).join(', ')}`);
});
