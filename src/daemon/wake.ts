/**
 * The schedule while cosd is not running (idle exit): before leaving, cosd hands its next scheduled run to systemd as
 * a transient timer, `cos-agent-wake.timer` (systemd-run --on-calendar at that instant, UTC, to the second), whose
 * service starts cosd.service. The instant is also written to /run/cos-agent/wake.json; a cosd that starts and finds
 * it due runs the tick it was woken for (its random delay, window and inhibitors apply as on a resident daemon).
 *
 * Only for the host cosd runs on (root /): a daemon managing another root never arms timers on the machine. Where
 * the timer cannot be armed (no systemd), arm() rejects and the daemon stays resident: a schedule is never dropped
 * silently.
 *
 * Test-only seam: AGENT_TEST_WAKE_ARGV (a JSON argv) runs instead of systemd-run, with the instant (ISO 8601)
 * appended; it is used whatever the root.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import type { SysRoot } from '../sys/root.ts';

export const WAKE_RECORD = '/run/cos-agent/wake.json';
export const WAKE_UNIT = 'cos-agent-wake';
export const WAKE_ENV = 'AGENT_TEST_WAKE_ARGV';

/** systemd's calendar syntax for one instant, in UTC (systemd.time(7): "2026-12-06 03:00:00 UTC"). */
export function calendarUtc(at: Date): string {
  return `${at.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

export interface Waker {
  /** Arm the wake for `at` (replacing an earlier one) and record it. Rejects (NOT_SUPPORTED) when it cannot. */
  arm(at: Date): Promise<void>;
  /** The recorded wake instant, if any. */
  recorded(): Date | null;
  /** Forget the record (the wake it names has been served). */
  clear(): void;
}

export function systemdWaker(root: SysRoot, runner: Runner, env: NodeJS.ProcessEnv): Waker {
  const record = root.path(WAKE_RECORD);
  const seam = env[WAKE_ENV];
  return {
    async arm(at) {
      if (seam !== undefined && seam !== '') {
        await runner.run({ argv: [...(JSON.parse(seam) as string[]), at.toISOString()], description: `arming the schedule's wake (test seam ${WAKE_ENV})` });
      } else {
        if (!root.isHostRoot) throw new AgentError('NOT_SUPPORTED', `a cosd managing ${root.prefix} arms no timers on this machine`);
        // The wake of an earlier exit may still be loaded (elapsed, or waiting for an instant now replaced).
        await runner.run({ argv: ['systemctl', 'stop', `${WAKE_UNIT}.timer`, `${WAKE_UNIT}.service`], description: 'removing the previous wake timer', okExitCodes: [0, 1, 5] });
        await runner.run({ argv: ['systemctl', 'reset-failed', `${WAKE_UNIT}.timer`, `${WAKE_UNIT}.service`], description: 'removing the previous wake timer', okExitCodes: [0, 1, 5] });
        await runner.run({
          argv: ['systemd-run', '--quiet', `--unit=${WAKE_UNIT}`, `--on-calendar=${calendarUtc(at)}`, '--timer-property=AccuracySec=1s',
            '--description=cos-agent: start cosd for its scheduled run', '--', 'systemctl', 'start', 'cosd.service'],
          description: `arming a systemd timer to start cosd at ${at.toISOString()}`,
        });
      }
      mkdirSync(path.dirname(record), { recursive: true, mode: 0o755 });
      const tmp = `${record}.tmp`;
      writeFileSync(tmp, `${JSON.stringify({ at: at.toISOString() })}\n`);
      renameSync(tmp, record);
    },
    recorded() {
      try {
        const at = new Date((JSON.parse(readFileSync(record, 'utf8')) as { at?: unknown }).at as string);
        return Number.isNaN(at.getTime()) ? null : at;
      } catch {
        return null;
      }
    },
    clear() {
      rmSync(record, { force: true });
    },
  };
}
