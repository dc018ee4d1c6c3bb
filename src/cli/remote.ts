/**
 * The daemon backend: cosctl as a D-Bus client of cosd (src/dbus/client.ts). Jobs are started over the bus and
 * followed through PropertiesChanged and Completed; their errors come back as the same AgentError codes, so the exit
 * codes are the same table either way. `verify` writes nothing and needs no privileges: it runs in-process.
 */
import { connectAgent } from '../dbus/client.ts';
import type { AgentDeps } from '../host/deps.ts';
import type { Backend } from './backend.ts';

/**
 * The daemon backend when cosd owns its name on the bus (DBUS_SYSTEM_BUS_ADDRESS, else the system bus), else null:
 * cosctl then acts in-process. With an explicit root (`--root`, COS_ROOT) other than the one cosd manages, null too
 * (cosctl acts on that root itself); without one, cosd is used whatever root it manages.
 */
export async function connectDaemon(env: NodeJS.ProcessEnv, deps: AgentDeps, opts: { explicitRoot?: boolean } = {}): Promise<Backend | null> {
  const client = await connectAgent({ env });
  if (client === null) return null;
  const daemonRoot = opts.explicitRoot === true ? (await client.getProperty('Config').catch(() => null))?.root : undefined;
  if (daemonRoot !== undefined && daemonRoot !== '' && daemonRoot !== deps.root.prefix) {
    deps.log.info({ daemonRoot, root: deps.root.prefix }, 'cosd manages another root: running in-process');
    await client.close();
    return null;
  }
  return {
    kind: 'daemon',
    async upgrade(req, onProgress, signal) {
      const rec = await client.upgradeAndWait(req, { onProgress, ...(signal !== undefined ? { signal } : {}) });
      const d = rec.details;
      return {
        transaction: rec.transaction,
        target: d.target ?? (req.recovery ? 'recovery' : 'system'),
        image: d.image ?? req.image ?? '',
        digest: d.digest ?? '',
        version: d.version ?? null,
        verification: d.verification === 'verified' || d.verification === 'skipped' || d.verification === 'not-applicable' ? d.verification : 'unknown',
        keepPassiveReason: d.keepPassiveReason ?? null,
        unchanged: d.unchanged ?? null,
        warnings: d.warnings ?? [],
        nextBoot: d.nextBoot ?? null,
      };
    },
    async check(req) {
      const d = (await client.checkAndWait(req)).details;
      return { image: d.image ?? '', digest: d.digest ?? '', currentDigest: d.currentDigest ?? null, updateAvailable: d.updateAvailable === true };
    },
    async rollback(req) {
      const d = (await client.rollbackAndWait({ permanent: req.permanent })).details;
      return { permanent: d.permanent === true, nextEntry: d.nextEntry ?? null, warnings: d.warnings ?? [] };
    },
    cancel: () => client.cancel(),
    async mark(good) {
      const d = (await client.markAndWait(good)).details;
      return { assessmentChanged: d.assessmentChanged ?? null, warnings: d.warnings ?? [] };
    },
    status: () => client.getStatus(),
    // Loaded on use: the in-process actions are most of cosctl's code, and no other daemon call needs them.
    verify: async (image) => (await import('./local.ts')).localBackend(deps).verify(image),
    async watch(onStatus) {
      // Re-read on every property change and on Completed (the daemon refreshes its status before it signals
      // completion); print a document only when it differs from the last one printed.
      let last = '';
      const emit = async (): Promise<void> => {
        const doc = await client.getStatus();
        const text = JSON.stringify(doc);
        if (text === last) return;
        last = text;
        onStatus(doc);
      };
      await emit();
      let pending = Promise.resolve();
      const refresh = (): void => {
        pending = pending.then(emit).catch(() => {});
      };
      const stop = await client.subscribe({ changed: refresh, completed: refresh });
      return async () => {
        await stop();
        await pending;
      };
    },
    close: () => client.close(),
  };
}

