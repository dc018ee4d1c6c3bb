/** PURE: the status document as YAML (`cosctl status --yaml`): plain values, never an anchor or alias. */
import { stringify } from 'yaml';
import type { HostStatusDocument } from '../model/host.ts';

export function renderStatusYaml(doc: HostStatusDocument): string {
  // The yaml library writes an object met twice as an anchor (&a1) and an alias (*a1): readers without alias
  // support (and people) get each value where it belongs.
  return stringify(doc, { aliasDuplicateObjects: false });
}
