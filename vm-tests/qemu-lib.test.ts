/**
 * The VM harness's pure parts, without booting anything: result-line parsing (JSON after a marker, never prose),
 * assertion reports, and the qemu command line (TCG, OVMF, virtio, user networking).
 */
import './lib/timing.ts';
import test from 'ava';
import { bootReport, markerJson, qemuArgs, OVMF_CODE, type BootResult } from './lib/qemu.ts';

test('markerJson returns the JSON objects after the marker, in order, ignoring prose and noise before the marker', (t) => {
  const serial = [
    '[  OK  ] Reached target multi-user.target - Multi-User System.',
    'COSVM-RESULT {"unit":"multi-user","n":1}',
    '\x00junk COSVM-RESULT {"n":2,"nested":{"a":[1,2]}}  ',
    'COSVM-RESULTS {"n":3}',
    'a COSVM-RESULT mentioned in prose is not a result',
    '',
  ].join('\n');
  t.deepEqual(markerJson(serial, 'COSVM-RESULT'), [{ unit: 'multi-user', n: 1 }, { n: 2, nested: { a: [1, 2] } }]);
  t.deepEqual(markerJson(serial, 'COSVM-GRUB'), []);
});

test('markerJson rejects a marker line without a JSON object, and ignores an unterminated last line (power cut)', (t) => {
  t.throws(() => markerJson('COSVM-RESULT {"cut":"in the mid\n', 'COSVM-RESULT'), { message: /COSVM-RESULT: not JSON/ });
  t.throws(() => markerJson('COSVM-RESULT {"a":1} trailing\n', 'COSVM-RESULT'), { message: /not JSON/ });
  t.deepEqual(markerJson('COSVM-RESULT {"a":1}\nCOSVM-RESULT {"cut":"in the mid', 'COSVM-RESULT'), [{ a: 1 }]);
});

test('bootReport names the log and shows the last 80 console lines', (t) => {
  const lines = Array.from({ length: 200 }, (_, i) => `line ${i}`);
  const boot: BootResult = {
    logPath: '/var/tmp/x.log', disk: '/tmp/d.img', serial: `${lines.join('\n')}\n`, exitCode: null, signal: 'SIGKILL',
    timedOut: true, killedAtMarker: null, aborted: null, durationMs: 1500, results: [], resultTimesMs: [], stderr: '',
  };
  const r = bootReport(boot);
  t.regex(r, /HARD TIMEOUT\); serial log: \/var\/tmp\/x\.log/);
  t.true(r.includes('line 120\nline 121'));
  t.false(r.includes('line 119\n'));
  t.true(r.includes('line 199\n--- end of console ---'));
});

test('qemuArgs: TCG on q35, OVMF code read-only, virtio disk first in boot order, user networking with host forwards', (t) => {
  const a = qemuArgs({ disk: 'd', workDir: 'w', timeoutMs: 1, hostForwards: [{ hostPort: 2222, guestPort: 22 }] }, '/x/ov.qcow2', '/w/vars.fd').join(' ');
  t.regex(a, /-machine q35 -accel tcg /);
  t.true(a.includes(`if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`));
  t.true(a.includes('if=pflash,format=raw,unit=1,file=/w/vars.fd'));
  t.true(a.includes('if=none,id=d0,format=qcow2,file=/x/ov.qcow2 -device virtio-blk-pci,drive=d0,bootindex=0'));
  t.true(a.includes('-netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=n0'));
  t.false(a.includes('kvm'));
  const off = qemuArgs({ disk: 'd', workDir: 'w', timeoutMs: 1, network: false }, '/x/d.img', '/w/v.fd').join(' ');
  t.true(off.includes('format=raw,file=/x/d.img'));
  t.true(off.includes('-nic none'));
});
