/**
 * PURE parsing of `blkid -o export` / `blkid -p -o export` output. No I/O.
 *
 * The export format is one `KEY=value` line per tag, one block per device, blocks separated by a blank line.
 * blkid escapes the characters ` \ " ' $ \` < >` in values with a backslash; non-ASCII bytes and control characters
 * come out as `M-x` / `^x` sequences, which are ambiguous and are left as printed (cOS labels are ASCII).
 */

/** A filesystem-bearing block device as blkid reports it. */
export interface BlockDevice {
  device: string;
  label?: string;
  fstype?: string;
  uuid?: string;
  partlabel?: string;
}

/** Undo blkid's backslash escaping of a value. */
export function unescapeBlkidValue(value: string): string {
  return value.replace(/\\(.)/g, '$1');
}

/** Every device block of `blkid -o export` output, as tag maps (keys as printed: DEVNAME, LABEL, TYPE, ...). */
export function parseBlkidExport(text: string): Record<string, string>[] {
  const records: Record<string, string>[] = [];
  let current: Record<string, string> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') {
      current = undefined;
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) continue; // not a tag line (blkid prints nothing else in export mode)
    const key = line.slice(0, eq);
    const value = unescapeBlkidValue(line.slice(eq + 1));
    // A DEVNAME line always starts a device block, even without a separating blank line.
    if (current === undefined || (key === 'DEVNAME' && current['DEVNAME'] !== undefined)) {
      current = {};
      records.push(current);
    }
    current[key] = value;
  }
  return records;
}

/**
 * The BlockDevice of one export record. PART_ENTRY_NAME (low-level probe, `-p`) and PARTLABEL (cache mode) both give
 * the GPT partition name. `fallbackDevice` is used when the record has no DEVNAME.
 */
export function toBlockDevice(record: Readonly<Record<string, string>>, fallbackDevice?: string): BlockDevice {
  const device = record['DEVNAME'] ?? fallbackDevice ?? '';
  const out: BlockDevice = { device };
  const label = record['LABEL'];
  const fstype = record['TYPE'];
  const uuid = record['UUID'];
  const partlabel = record['PARTLABEL'] ?? record['PART_ENTRY_NAME'];
  if (label !== undefined) out.label = label;
  if (fstype !== undefined) out.fstype = fstype;
  if (uuid !== undefined) out.uuid = uuid;
  if (partlabel !== undefined) out.partlabel = partlabel;
  return out;
}

/** `parseBlkidExport` + `toBlockDevice` for every block. */
export function parseBlockDevices(text: string): BlockDevice[] {
  return parseBlkidExport(text).map((r) => toBlockDevice(r));
}
