/**
 * The only place that spawns processes. Argv arrays only, never a shell string; stdin closed unless given.
 */
import { spawn } from 'node:child_process';
import { CommandError } from '../model/errors.ts';

export interface Command {
  /** argv[0] is looked up on PATH. */
  readonly argv: readonly string[];
  /** A human sentence used in logs and errors ("formatting the transition image"). */
  readonly description: string;
  readonly stdin?: string | Buffer;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  readonly timeoutMs?: number;
  /** Exit codes treated as success besides 0. */
  readonly okExitCodes?: readonly number[];
}

export interface CommandResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Runner {
  run(cmd: Command): Promise<CommandResult>;
}

const STDERR_TAIL = 1024;

/** The real runner: spawns without a shell and collects output. */
export class SpawnRunner implements Runner {
  private readonly onCommand: ((argv: readonly string[]) => void) | undefined;
  constructor(opts: { onCommand?: (argv: readonly string[]) => void } = {}) {
    this.onCommand = opts.onCommand;
  }

  run(cmd: Command): Promise<CommandResult> {
    this.onCommand?.(cmd.argv);
    return new Promise((resolve, reject) => {
      const [file, ...args] = cmd.argv;
      if (file === undefined) {
        reject(new CommandError(cmd.description, cmd.argv, { exitCode: null, signal: null, stderrTail: 'empty argv' }));
        return;
      }
      const child = spawn(file, args, {
        shell: false,
        stdio: [cmd.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        env: cmd.env ? { ...process.env, ...cmd.env } : process.env,
        cwd: cmd.cwd,
        timeout: cmd.timeoutMs,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => {
        reject(new CommandError(cmd.description, cmd.argv, { exitCode: null, signal: null, stderrTail: e.message }, { cause: e }));
      });
      child.on('close', (code, signal) => {
        const stdout = Buffer.concat(out).toString('utf8');
        const stderr = Buffer.concat(err).toString('utf8');
        if (code === 0 || (code !== null && cmd.okExitCodes?.includes(code))) {
          resolve({ exitCode: code, stdout, stderr });
        } else {
          reject(new CommandError(cmd.description, cmd.argv, { exitCode: code, signal, stderrTail: stderr.slice(-STDERR_TAIL) }));
        }
      });
      if (cmd.stdin !== undefined && child.stdin) {
        child.stdin.on('error', () => {});
        child.stdin.end(cmd.stdin);
      }
    });
  }
}
