/**
 * Types for the two internal modules of dbus-next 0.10 that src/dbus/wire.ts uses (the package ships types for its
 * public API only). Pinned in package.json; wire.ts checks their shape at run time and falls back when it differs.
 */

declare module 'dbus-next/lib/message.js' {
  /** A message as the parser produced it, before dbus-next converts the body: the body in wire ("marshall") form. */
  interface RawMessage {
    serial?: number;
    sender?: string;
    type?: number;
    signature?: string;
    body?: unknown[];
  }
  const message: {
    /** Parses messages off the stream, calling onMessage with each (synchronously from the stream's 'readable'). */
    unmarshalMessages(stream: unknown, onMessage: (msg: RawMessage) => void, opts?: unknown): void;
  };
  export default message;
}

declare module 'dbus-next/lib/marshall-compat.js' {
  const compat: {
    /** Converts a wire-form body to dbus-next's JavaScript form (in place: returns the same object). */
    messageToJsFmt(msg: { signature: string; body: unknown[] }): { signature: string; body: unknown[] };
  };
  export default compat;
}
