/**
 * PURE: the agent's state as Prometheus metrics, in the text exposition format node_exporter's textfile collector
 * reads (fleets.md section 4). One function of the status document (what boots, what is staged, what runs) and of
 * the last check and upgrade: a fleet dashboard sees what `cosctl status` says.
 *
 * Cardinality is bounded: every label takes a value from a fixed set (slot, role, result code), except the `*_info`
 * metrics, which carry the image, version and digest of at most one row per role or slot (their value is always 1).
 * No digest or transaction id is ever a label of anything else. Metric names and labels are listed in the README.
 */
import type { BootedFrom, HostStatusDocument, SlotName, SlotStatus } from './host.ts';

/** A finished job, as the metrics need it. */
export interface JobOutcome {
  ok: boolean;
  /** ErrorCode of a failure, null on success. */
  code: string | null;
  startedAt: string;
  finishedAt: string;
}

export interface MetricsInput {
  agentVersion: string;
  status: HostStatusDocument;
  /** Whether the last read of the status succeeded (false: `status` is the last copy read, from before). */
  statusReadOk: boolean;
  /** cosd's UpdateAvailable (the last check of the configured image); null when not known. */
  updateAvailable: boolean | null;
  lastCheck: JobOutcome | null;
}

type Labels = Readonly<Record<string, string>>;
interface Sample { labels?: Labels; value: number }
interface Family { name: string; help: string; type: 'gauge'; samples: Sample[] }

const SLOTS: readonly SlotName[] = ['active', 'passive', 'recovery'];
const BOOTED: readonly BootedFrom[] = ['active', 'passive', 'recovery', 'live', 'unknown'];

/** A label value as the exposition format wants it: backslash, double quote and newline escaped. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function sampleLine(name: string, s: Sample): string {
  const labels = Object.entries(s.labels ?? {});
  const l = labels.length === 0 ? '' : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
  return `${name}${l} ${Number.isInteger(s.value) ? String(s.value) : s.value.toFixed(3)}`;
}

const seconds = (iso: string): number | null => {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? ms / 1000 : null;
};

const bit = (b: boolean): number => (b ? 1 : 0);

function imageLabels(s: SlotStatus): Record<string, string> {
  return { slot: s.slot, version: s.version ?? '', image: s.image ?? '', digest: s.imageDigest ?? '', verification: s.verification };
}

/** Timestamp, duration and result of a job (absent families when there is none, as Prometheus wants "unknown"). */
function jobFamilies(prefix: string, what: string, job: JobOutcome | null): Family[] {
  if (job === null) return [];
  const fams: Family[] = [
    { name: `${prefix}_success`, help: `Whether the last ${what} succeeded.`, type: 'gauge', samples: [{ value: bit(job.ok) }] },
  ];
  const end = seconds(job.finishedAt);
  const start = seconds(job.startedAt);
  if (end !== null) fams.push({ name: `${prefix}_timestamp_seconds`, help: `When the last ${what} finished (Unix time).`, type: 'gauge', samples: [{ value: end }] });
  if (end !== null && start !== null && end >= start) {
    fams.push({ name: `${prefix}_duration_seconds`, help: `How long the last ${what} took.`, type: 'gauge', samples: [{ value: end - start }] });
  }
  if (!job.ok && job.code !== null) {
    fams.push({ name: `${prefix}_error`, help: `The error code of the last ${what}, when it failed.`, type: 'gauge', samples: [{ labels: { code: job.code }, value: 1 }] });
  }
  return fams;
}

/** The metric families, in a fixed order. */
export function metricFamilies(input: MetricsInput): Family[] {
  const st = input.status.status;
  const roles: Array<['booted' | 'staged' | 'rollback', SlotStatus | null]> = [['booted', st.booted], ['staged', st.staged], ['rollback', st.rollback]];
  const lastUpgrade = st.lastUpgrade;
  const fams: Family[] = [
    { name: 'cos_agent_info', help: 'The cos-agent version that wrote these metrics.', type: 'gauge', samples: [{ labels: { version: input.agentVersion }, value: 1 }] },
    {
      name: 'cos_agent_status_read_ok', help: 'Whether the last read of the host status succeeded (0: the values below are from the last read that did).', type: 'gauge',
      samples: [{ value: bit(input.statusReadOk) }],
    },
    {
      name: 'cos_agent_booted_slot', help: 'The slot the running system booted from (1 for that slot).', type: 'gauge',
      samples: BOOTED.map((slot) => ({ labels: { slot }, value: bit(st.bootedFrom === slot) })),
    },
    {
      name: 'cos_agent_image_info', help: 'The image of the booted, staged (boots next, when not the booted one) and rollback slots.', type: 'gauge',
      samples: roles.filter((r): r is [typeof r[0], SlotStatus] => r[1] !== null).map(([role, s]) => ({ labels: { role, ...imageLabels(s) }, value: 1 })),
    },
    {
      name: 'cos_agent_slot_info', help: 'The image each slot holds (absent for an empty slot).', type: 'gauge',
      samples: SLOTS.map((n) => st.slots[n]).filter((s) => s.present).map((s) => ({ labels: imageLabels(s), value: 1 })),
    },
    {
      name: 'cos_agent_slot_present', help: 'Whether the slot holds an image file.', type: 'gauge',
      samples: SLOTS.map((slot) => ({ labels: { slot }, value: bit(st.slots[slot].present) })),
    },
    {
      name: 'cos_agent_slot_verified', help: 'Whether the slot\'s image had its signature verified when it was staged.', type: 'gauge',
      samples: SLOTS.map((slot) => ({ labels: { slot }, value: bit(st.slots[slot].verification === 'verified') })),
    },
    {
      name: 'cos_agent_next_boot_slot', help: 'The slot GRUB boots next (1 for that slot; none: no entry can boot).', type: 'gauge',
      samples: [...SLOTS, 'none' as const].map((slot) => ({ labels: { slot }, value: bit((st.nextBoot.slot ?? 'none') === slot) })),
    },
    { name: 'cos_agent_next_boot_one_shot', help: 'Whether the next boot is a one-shot choice (a rollback to try once).', type: 'gauge', samples: [{ value: bit(st.nextBoot.oneShot) }] },
    { name: 'cos_agent_verification_required', help: 'Whether upgrades must carry a verified signature.', type: 'gauge', samples: [{ value: bit(input.status.spec.verify) }] },
    { name: 'cos_agent_boot_assessment_armed', help: 'Whether boot assessment is armed (an upgrade is on trial).', type: 'gauge', samples: [{ value: bit(st.bootAssessment.enabled) }] },
  ];
  if (st.bootAssessment.triesLeft !== null) {
    fams.push({ name: 'cos_agent_boot_assessment_tries_left', help: 'Boots of the upgraded active slot left before GRUB falls back.', type: 'gauge', samples: [{ value: st.bootAssessment.triesLeft }] });
  }
  fams.push({
    name: 'cos_agent_upgrade_failure', help: 'Whether this boot is a fallback: the last upgrade failed boot assessment (upgrade_failure).', type: 'gauge',
    samples: [{ value: bit(st.upgradeFailure) }],
  });
  if (input.updateAvailable !== null) {
    fams.push({ name: 'cos_agent_update_available', help: 'Whether the last check found a new image for the configured source.', type: 'gauge', samples: [{ value: bit(input.updateAvailable) }] });
  }
  fams.push(...jobFamilies('cos_agent_last_upgrade', 'upgrade', lastUpgrade === null ? null : {
    ok: lastUpgrade.result === 'success', code: lastUpgrade.code, startedAt: lastUpgrade.startedAt, finishedAt: lastUpgrade.finishedAt,
  }));
  fams.push(...jobFamilies('cos_agent_last_check', 'check', input.lastCheck));
  return fams;
}

/** The text exposition format: HELP, TYPE and samples of each family with samples, ending with a newline. */
export function renderMetrics(input: MetricsInput): string {
  const lines: string[] = [];
  for (const f of metricFamilies(input)) {
    if (f.samples.length === 0) continue;
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.samples.map((s) => sampleLine(f.name, s)));
  }
  return `${lines.join('\n')}\n`;
}
