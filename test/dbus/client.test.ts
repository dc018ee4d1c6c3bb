import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dbus from 'dbus-next';
import { AgentError } from '../../src/model/errors.ts';
import { AgentClient, connectAgent, fromDbusError, UnknownDbusError } from '../../src/dbus/client.ts';
import { startBus, startCosd } from '../helpers/dbus.ts';

test('connectAgent gives null when there is no bus at the address (cosctl then runs in-process)', async (t) => {
  t.is(await connectAgent({ address: 'unix:path=/nonexistent/cos-test/bus' }), null);
  t.is(await connectAgent({ env: { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/cos-test/bus' } }), null);
  const err = await t.throwsAsync(AgentClient.connect({ address: 'unix:path=/nonexistent/cos-test/bus' }));
  t.is((err as AgentError).code, 'NOT_SUPPORTED');
  t.regex(err?.message ?? '', /\/nonexistent\/cos-test\/bus/);
});

test('connectAgent gives null on a bus where no cosd owns the name, and a client once one does', async (t) => {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  t.is(await connectAgent({ address: bus.address }), null);
  const root = await mkdtemp(path.join(tmpdir(), 'cosd-root-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const cosd = await startCosd(bus, { root, env: { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' } });
  t.teardown(async () => {
    await cosd.stop();
  });
  const client = await connectAgent({ address: bus.address });
  t.truthy(client);
  t.teardown(() => client?.close());
  t.true(await client!.daemonRunning());
  t.is(client!.address, bus.address);
  t.is(await client!.getProperty('Operation'), 'idle');
});

test('D-Bus errors come back as AgentErrors of the same table; names outside it as UnknownDbusError', (t) => {
  const busy = fromDbusError(new dbus.DBusError('io.costoolkit.Agent1.Error.Busy', 'busy: upgrade transaction x is running'));
  t.true(busy instanceof AgentError);
  t.is((busy as AgentError).code, 'BUSY');
  t.is(busy.message, 'busy: upgrade transaction x is running');
  t.is((fromDbusError(new dbus.DBusError('org.freedesktop.DBus.Error.AccessDenied', 'Rejected send message')) as AgentError).code, 'ACCESS_DENIED');
  const weird = fromDbusError(new dbus.DBusError('com.github.dbus_next.ServiceError', 'Service error: boom'));
  t.false(weird instanceof AgentError);
  t.true(weird instanceof UnknownDbusError);
  t.is((weird as UnknownDbusError).dbusName, 'com.github.dbus_next.ServiceError');
  const plain = new Error('socket closed');
  t.is(fromDbusError(plain), plain);
});
