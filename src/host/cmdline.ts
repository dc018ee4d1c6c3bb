/**
 * PURE: which image the host booted from, read from /proc/cmdline (spec cos-layout.md 1.4, 2.4, 3.4, 4.4, 4.5).
 *
 * Decision order:
 *  1. `root=live:LABEL=<recovery label>` -> recovery, squashfs flavour (dracut dmsquash-live; `rd.live.squashimg=`).
 *  2. `cdroot`, `root=live:CDLABEL=…` or any other `root=live:` -> the live ISO.
 *  3. `cos-img/filename=…/active.img|passive.img|recovery.img` -> that slot (recovery = img flavour). This is checked
 *     before `root=` because toolkit v1.0 bootargs use `root=LABEL=<state label>` with the file name.
 *  4. `root=LABEL=<label>` (or `root=/dev/disk/by-label/<label>`): active / passive label -> that slot; system label ->
 *     recovery (img); recovery label -> recovery (flavour from `rd.live.squashimg` / the file name when present).
 *  5. otherwise `unknown`.
 * Unlike elemental's substring match (`BootedFrom`), labels are compared exactly, so custom labels work as long as
 * they are passed in. `upgrade_failure` (the token boot assessment adds to the fallback entry) is reported separately.
 */
import { DEFAULT_LABELS, type Labels } from '../model/config.ts';

export type BootedFrom = 'active' | 'passive' | 'recovery' | 'live' | 'unknown';
export type RecoveryFlavour = 'squashfs' | 'img';

export interface BootInfo {
  bootedFrom: BootedFrom;
  /** Set when bootedFrom is `recovery` and the flavour can be told from the cmdline. */
  recoveryFlavour?: RecoveryFlavour;
  /** The `upgrade_failure` token is present: GRUB fell back after a failed boot of a new active image. */
  upgradeFailure: boolean;
  /** Every parameter: `name -> value`, or `true` for a bare flag. The last occurrence wins (as dracut's getarg). */
  tokens: Map<string, string | true>;
}

/**
 * Split a kernel command line into parameters exactly as the kernel's `next_arg()` does: blanks separate, double
 * quotes group (`a="b c"` -> a = `b c`; `"a=b c"` -> a = `b c`), quotes elsewhere stay in the value.
 */
export function splitCmdline(text: string): Array<[string, string | true]> {
  const out: Array<[string, string | true]> = [];
  const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/.test(c);
  let s = text;
  let p = 0;
  while (p < s.length && isSpace(s[p])) p++;
  s = s.slice(p);
  while (s.length > 0) {
    let args = s;
    let inQuote = false;
    let quoted = false;
    if (args[0] === '"') {
      args = args.slice(1);
      inQuote = true;
      quoted = true;
    }
    let i = 0;
    let equals = -1;
    for (; i < args.length; i++) {
      const c = args[i];
      if (isSpace(c) && !inQuote) break;
      if (equals < 0 && c === '=') equals = i;
      if (c === '"') inQuote = !inQuote;
    }
    let token = args.slice(0, i);
    let name: string;
    let value: string | true;
    if (equals < 0) {
      if (quoted && token.endsWith('"')) token = token.slice(0, -1);
      name = token;
      value = true;
    } else {
      name = token.slice(0, equals);
      let v = token.slice(equals + 1);
      if (v.startsWith('"')) {
        v = v.slice(1);
        if (token.endsWith('"')) v = v.slice(0, -1);
      } else if (quoted && v.endsWith('"')) {
        v = v.slice(0, -1);
      }
      value = v;
    }
    if (name !== '') out.push([name, value]);
    let rest = args.slice(i);
    p = 0;
    while (p < rest.length && isSpace(rest[p])) p++;
    rest = rest.slice(p);
    s = rest;
  }
  return out;
}

const basename = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/** Parse /proc/cmdline. `labels`: the host's labels (custom `*_LABEL` config); missing ones take the defaults. */
export function parseCmdline(text: string, labels: Partial<Labels> = {}): BootInfo {
  const l: Labels = { ...DEFAULT_LABELS, ...labels };
  const tokens = new Map<string, string | true>();
  for (const [k, v] of splitCmdline(text)) tokens.set(k, v);
  const str = (k: string): string | undefined => {
    const v = tokens.get(k);
    return typeof v === 'string' ? v : undefined;
  };
  const upgradeFailure = tokens.has('upgrade_failure');
  const root = str('root') ?? '';
  const squashImg = str('rd.live.squashimg');
  const imgFile = str('cos-img/filename');
  const done = (bootedFrom: BootedFrom, recoveryFlavour?: RecoveryFlavour): BootInfo => ({
    bootedFrom,
    ...(recoveryFlavour !== undefined ? { recoveryFlavour } : {}),
    upgradeFailure,
    tokens,
  });

  if (root.startsWith('live:')) {
    const spec = root.slice('live:'.length);
    if (spec === `LABEL=${l.recovery}` || spec === `/dev/disk/by-label/${l.recovery}`) return done('recovery', 'squashfs');
    return done('live');
  }
  if (tokens.has('cdroot')) return done('live');

  if (imgFile !== undefined) {
    switch (basename(imgFile)) {
      case 'active.img':
        return done('active');
      case 'passive.img':
        return done('passive');
      case 'recovery.img':
        return done('recovery', 'img');
      case 'recovery.squashfs':
        return done('recovery', 'squashfs');
    }
  }

  const m = /^(?:LABEL=|\/dev\/disk\/by-label\/)(.+)$/.exec(root);
  const label = m?.[1];
  if (label !== undefined) {
    if (label === l.active) return done('active');
    if (label === l.passive) return done('passive');
    if (label === l.system) return done('recovery', 'img');
    if (label === l.recovery) {
      const file = squashImg ?? imgFile;
      if (file?.endsWith('.squashfs')) return done('recovery', 'squashfs');
      if (file?.endsWith('.img')) return done('recovery', 'img');
      return done('recovery');
    }
  }
  return done('unknown');
}
