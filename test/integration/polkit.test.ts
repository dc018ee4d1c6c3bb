/**
 * Authorization with polkit, where the host runs it: a real polkitd on the private bus (in its own mount namespace,
 * with cosd's packaged actions and a test rule), the real cosd, and callers running as uid 65534 (nobody).
 */
import test, { type ExecutionContext } from 'ava';
import { createCosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { sha256File } from '../helpers/cosctl.ts';
import { asUser, startBus, startCosd, type CosdProcess, type TestBus } from '../helpers/dbus.ts';
import { startPolkit } from '../helpers/polkit.ts';
import { AgentClient } from '../../src/dbus/client.ts';

const NOBODY = 65534;
/** nobody may check for updates; nothing else is granted (the packaged defaults refuse without authentication). */
const RULES = `polkit.addRule(function (action, subject) {
  if (action.id === "io.costoolkit.agent1.check" && subject.user === "nobody") return polkit.Result.YES;
});
`;

let reg: TestRegistry;
let image = '';
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  image = `${reg.host}/cos/os:v2`;
});
test.after.always(async () => {
  await reg?.stop();
});

async function rig(t: ExecutionContext, polkit: boolean | 'drop-in', rules?: string): Promise<{ bus: TestBus; cosd: CosdProcess; client: AgentClient; active: () => Promise<string> }> {
  const bus = await startBus({ polkit });
  t.teardown(() => bus.stop());
  if (polkit !== false) {
    const pk = await startPolkit(bus, rules !== undefined ? { rules } : {});
    t.teardown(() => pk.stop());
  }
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const cosd = await startCosd(bus, host);
  t.teardown(async () => {
    await cosd.stop();
  });
  const client = await AgentClient.connect({ address: bus.address });
  t.teardown(() => client.close());
  return { bus, cosd, client, active: () => sha256File(host.statePath('cOS/active.img')) };
}

test.serial('with the drop-in, a non-root caller gets what a polkit rule grants (Check) and nothing else (Upgrade, MarkGood)', async (t) => {
  const { bus, cosd, client, active } = await rig(t, 'drop-in', RULES);
  const before = await active();
  const check = await asUser(NOBODY, bus, 'check', image);
  t.true(check.ok, JSON.stringify(check));
  const tx = String((check as { value: unknown }).value);
  t.like(await cosd.waitForLog((l) => l.msg === 'call authorized by polkit'), { method: 'Check', uid: NOBODY, action: 'io.costoolkit.agent1.check' });
  t.like(await cosd.waitForLog((l) => l.msg === 'job succeeded' && l.transaction === tx), { kind: 'check', updateAvailable: true });

  const up = await asUser(NOBODY, bus, 'upgrade');
  t.is(up.code, 'ACCESS_DENIED', JSON.stringify(up));
  t.regex((up as { message: string }).message, /^Upgrade is for root, or for callers polkit authorizes for io\.costoolkit\.agent1\.upgrade; polkit said no \(the caller :\S+ runs as uid 65534\)$/);
  const mark = await asUser(NOBODY, bus, 'markGood');
  t.is(mark.code, 'ACCESS_DENIED', JSON.stringify(mark));
  t.regex((mark as { message: string }).message, /io\.costoolkit\.agent1\.mark/);
  t.like(cosd.logs.find((l) => l.msg === 'refused a call from a non-root caller' && l.method === 'Upgrade'), { uid: NOBODY, polkit: 'no' });
  t.is(await active(), before, 'nothing staged');

  // root needs no polkit rule
  const rec = await client.checkAndWait({ image });
  t.is(rec.result, 0);
});

test.serial('with polkit running but no rule, the packaged defaults let no non-root caller in', async (t) => {
  const { bus } = await rig(t, 'drop-in');
  const check = await asUser(NOBODY, bus, 'check', image);
  t.is(check.code, 'ACCESS_DENIED', JSON.stringify(check));
  t.regex((check as { message: string }).message, /polkit authorizes for io\.costoolkit\.agent1\.check/);
  t.true((await asUser(NOBODY, bus, 'getStatus')).ok, 'reading stays open to everyone');
});

test.serial('without the drop-in the bus policy keeps state-changing methods for root, whatever polkit would say', async (t) => {
  const { bus, cosd } = await rig(t, true, RULES);
  const check = await asUser(NOBODY, bus, 'check', image);
  t.is(check.code, 'ACCESS_DENIED', JSON.stringify(check));
  t.is((check as { message: string }).message, 'Check changes the system and is for root only: the bus policy refused the call (run cosctl as root)', 'refused by dbus-daemon, before cosd');
  t.false(cosd.logs.some((l) => l.msg === 'call authorized by polkit'));
});

test.serial('where polkit does not run, a non-root caller that reaches cosd is refused: root only', async (t) => {
  // The open test policy lets the call through the bus, so it is cosd's own check that refuses it.
  const bus = await startBus({ policy: 'open' });
  t.teardown(() => bus.stop());
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const cosd = await startCosd(bus, host);
  t.teardown(async () => {
    await cosd.stop();
  });
  const check = await asUser(NOBODY, bus, 'check', image);
  t.is(check.code, 'ACCESS_DENIED', JSON.stringify(check));
  t.is((check as { message: string }).message.replace(/:\S+/, ':X'), 'Check is for root only (the caller :X runs as uid 65534)');
  t.like(cosd.logs.find((l) => l.msg === 'refused a call from a non-root caller'), { method: 'Check', polkit: 'absent' });
});
