/** Test helper: HostFacts for the pure host model (src/host/boot-model.ts), with sensible defaults. */
import type { HostFacts, SlotFacts } from '../../src/host/boot-model.ts';
import type { BootedFrom, SlotName } from '../../src/model/host.ts';
import type { ImageEntry } from '../../src/model/state.ts';

export interface FactsInput {
  bootedFrom?: BootedFrom;
  upgradeFailure?: boolean;
  /** The slot whose image runs (its id becomes runningId); default: bootedFrom. null: unknown identity. */
  running?: SlotName | null;
  slots?: Partial<Record<SlotName, Partial<SlotFacts> & { result?: ImageEntry['upgradeResult'] }>>;
  user?: Record<string, string>;
  oem?: Record<string, string>;
  assessment?: Record<string, string>;
}

const LABELS = { active: 'COS_ACTIVE', passive: 'COS_PASSIVE', recovery: null } as const;

export function hostFacts(i: FactsInput = {}): HostFacts {
  const bootedFrom = i.bootedFrom ?? 'active';
  const slot = (name: SlotName): SlotFacts => {
    const s = i.slots?.[name] ?? {};
    const id = s.id !== undefined ? s.id : `uuid-${name}`;
    const record: ImageEntry | null = s.record !== undefined ? s.record
      : { digest: `sha256:${name}`, ...(id !== null ? { uuid: id } : {}), ...(s.result !== undefined ? { upgradeResult: s.result } : {}) };
    return { present: s.present ?? true, id, label: s.label !== undefined ? s.label : LABELS[name], record };
  };
  const slots = { active: slot('active'), passive: slot('passive'), recovery: slot('recovery') };
  const running = i.running === undefined ? (bootedFrom === 'live' || bootedFrom === 'unknown' ? null : bootedFrom) : i.running;
  return {
    bootedFrom,
    upgradeFailure: i.upgradeFailure ?? false,
    runningId: running === null ? null : slots[running].id,
    slots,
    grub: {
      user: new Map(Object.entries(i.user ?? {})),
      oem: new Map(Object.entries(i.oem ?? { default_menu_entry: 'cOS' })),
      assessment: new Map(Object.entries(i.assessment ?? {})),
    },
    labels: { active: 'COS_ACTIVE', passive: 'COS_PASSIVE' },
  };
}
