/**
 * VM-test helper: run a host tool with an argv array (never a shell string) and collect its output.
 */
import { spawn } from 'node:child_process';

export interface RunOptions {
  cwd?: string;
  env?: Readonly<Record<string, string>>;
  /** Written to the child's stdin (stdin is closed otherwise). */
  stdin?: string | Buffer;
  /** Kill the child (SIGKILL) after this many ms. Default 20 minutes. */
  timeoutMs?: number;
  /** Exit codes that count as success besides 0. */
  okExitCodes?: readonly number[];
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const TAIL = 4000;

/** Runs argv[0] (looked up on PATH) with the rest as arguments; rejects with the stderr tail on failure. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      shell: false,
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdio: [opts.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 20 * 60_000,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new Error(`${argv.join(' ')}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0 || (code !== null && opts.okExitCodes?.includes(code))) {
        resolve({ exitCode: code, stdout, stderr });
        return;
      }
      const how = code !== null ? `exit code ${code}` : `signal ${signal}`;
      reject(new Error(`${argv.join(' ')} failed (${how}):\n${(stderr || stdout).slice(-TAIL)}`));
    });
    if (opts.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => {});
      child.stdin.end(opts.stdin);
    }
  });
}
