// ava's configuration (a file, not package.json, for sortTestFiles). Test files run two at a time; the VM suite runs
// last, its files longest serial chain of boots first (vm-tests/README.md): its two VM slots then stay busy until
// the short files at the end, instead of one long scenario finishing alone while the other slot idles.
const VM_ORDER = ['powercut', 'recovery', 'fallback', 'upgrade', 'panic', 'agent', 'boot', 'qemu-lib'];

const rank = (file) => {
  const m = /vm-tests\/([\w-]+)\.test\.ts$/.exec(file);
  if (m === null) return -1;
  const i = VM_ORDER.indexOf(m[1]);
  return i < 0 ? VM_ORDER.length : i;
};

export default {
  files: ['test/**/*.test.ts', 'vm-tests/**/*.test.ts'],
  extensions: { ts: 'module' },
  serial: false,
  concurrency: 2,
  timeout: '5m',
  workerThreads: false,
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b, [], { numeric: true }),
};
