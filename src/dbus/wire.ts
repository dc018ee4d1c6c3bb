/**
 * The a{sv} argument of an incoming method call as it was on the wire. dbus-next hands a method handler the body
 * converted to JavaScript, and converts an a{sv} into a plain object by assignment (`result[key] = value`): a key
 * "__proto__" replaces the object's prototype instead of becoming a key, and a repeated key overwrites the earlier
 * one. The option decoders (codec.ts) need every entry, so this module keeps the wire-form body of the message being
 * dispatched: dbus-next's parser calls back once per message, and dbus-next converts the body and dispatches the
 * message (bus 'message' listeners, method handlers) synchronously inside that callback. `wireOptions(msg)`, called
 * from a method handler, returns the entries of the message's a{sv} argument in order, repeated keys included, each
 * value converted by dbus-next's own converter; undefined when the hook did not see the message (the caller then
 * falls back on dbus-next's object, and codec.ts still refuses a replaced prototype).
 *
 * The hook wraps the parser entry point of dbus-next's message module (the connection looks it up on each connect),
 * once per process, before any connection is made: importing this module installs it. Nothing else changes: the
 * message is still parsed and converted by dbus-next.
 */
import type dbus from 'dbus-next';
import messageModule from 'dbus-next/lib/message.js';
import compat from 'dbus-next/lib/marshall-compat.js';

const METHOD_CALL = 1;
const HOOKED = Symbol.for('cos-agent.dbus.wire-hook');

interface Dispatching {
  serial: number | undefined;
  sender: string | undefined;
  signature: string;
  body: unknown[];
}

/** The wire form of the method call being dispatched right now (null between messages). */
let dispatching: Dispatching | null = null;

function install(): boolean {
  const mod = messageModule as typeof messageModule & { [HOOKED]?: boolean };
  if (mod[HOOKED] === true) return true;
  const parse = mod.unmarshalMessages;
  if (typeof parse !== 'function') return false;
  mod.unmarshalMessages = function unmarshalMessages(this: unknown, stream, onMessage, opts) {
    parse.call(this, stream, (raw) => {
      const outer = dispatching;
      // The body array is kept before dbus-next replaces msg.body with its converted form.
      dispatching = raw.type === METHOD_CALL && Array.isArray(raw.body)
        ? { serial: raw.serial, sender: raw.sender, signature: raw.signature ?? '', body: raw.body }
        : null;
      try {
        onMessage(raw);
      } finally {
        dispatching = outer;
      }
    }, opts);
  };
  mod[HOOKED] = true;
  return true;
}

/** Whether the hook is in place (dbus-next's internals have the expected shape). */
export const wireHookInstalled: boolean = install();

/** A wire-form variant: [[signature tree], [value]]. */
function isRawVariant(v: unknown): v is [unknown[], unknown[]] {
  return Array.isArray(v) && v.length === 2 && Array.isArray(v[0]) && v[0].length === 1 && Array.isArray(v[1]) && v[1].length === 1;
}

/**
 * The entries of `msg`'s a{sv} argument (its only one) as they were on the wire, values as dbus-next Variants; or
 * undefined when `msg` is not the message being dispatched, or its signature is not exactly a{sv}. Call it
 * synchronously from the method handler.
 */
export function wireOptions(msg: dbus.Message): Array<[string, unknown]> | undefined {
  const d = dispatching;
  if (d === null || msg.signature !== 'a{sv}' || d.signature !== 'a{sv}' || d.serial !== (msg.serial ?? undefined) || d.sender !== msg.sender) {
    return undefined;
  }
  const dict = d.body[0];
  if (!Array.isArray(dict)) return undefined;
  const out: Array<[string, unknown]> = [];
  for (const entry of dict) {
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string' || !isRawVariant(entry[1])) return undefined;
    const [value] = compat.messageToJsFmt({ signature: 'v', body: [entry[1]] }).body;
    out.push([entry[0], value]);
  }
  return out;
}
