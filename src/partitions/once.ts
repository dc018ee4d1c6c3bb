/** close() helpers shared by mounts and loop devices. */

/** Wrap `fn` so it runs once: concurrent and later calls share its result; a failed run may be retried. */
export function onceCloser(fn: () => Promise<void>): () => Promise<void> {
  let done = false;
  let pending: Promise<void> | undefined;
  return () => {
    if (done) return Promise.resolve();
    pending ??= fn().then(
      () => {
        done = true;
        pending = undefined;
      },
      (err: unknown) => {
        pending = undefined;
        throw err;
      },
    );
    return pending;
  };
}
