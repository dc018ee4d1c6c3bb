/**
 * Test helper program: one call to cosd through src/dbus/client.ts, run as another user by test/helpers/dbus.ts
 * asUser(). Prints one JSON line: {"ok":true,"value":...} or {"ok":false,"code":"ACCESS_DENIED","message":"..."}.
 *   node dbus-call.ts getStatus | getProperty NAME | upgrade | check IMAGE | cancel | markGood | runStage NAME
 */
import { AgentError } from '../../src/model/errors.ts';
import { AgentClient } from '../../src/dbus/client.ts';
import type { PropertyName } from '../../src/dbus/codec.ts';

const [call, arg] = process.argv.slice(2);
const client = await AgentClient.connect();
try {
  let value: unknown;
  switch (call) {
    case 'getStatus':
      value = await client.getStatus();
      break;
    case 'getProperty':
      value = await client.getProperty(arg as PropertyName);
      break;
    case 'upgrade':
      value = await client.upgrade({ image: 'registry.invalid/os:v1', noVerify: true });
      break;
    case 'check':
      value = await client.check({ image: arg ?? 'registry.invalid/os:v1' });
      break;
    case 'cancel':
      value = await client.cancel();
      break;
    case 'markGood':
      value = await client.markGood();
      break;
    case 'runStage':
      await client.runStage(arg ?? 'after-upgrade');
      value = null;
      break;
    default:
      throw new Error(`unknown call ${call}`);
  }
  process.stdout.write(`${JSON.stringify({ ok: true, value })}\n`);
} catch (e) {
  const code = e instanceof AgentError ? e.code : 'INTERNAL';
  process.stdout.write(`${JSON.stringify({ ok: false, code, message: e instanceof Error ? e.message : String(e) })}\n`);
} finally {
  await client.close();
}
