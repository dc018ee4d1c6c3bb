/** A one-shot timer that never keeps the process up (unref'd), cancellable; the seam tests replace with a hand-driven one. */
export type SetTimer = (fn: () => void, ms: number) => { cancel(): void };

export const unrefTimer: SetTimer = (fn, ms) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return { cancel: () => clearTimeout(t) };
};
