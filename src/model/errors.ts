/**
 * Error classes shared by every module. Each carries a stable string `code` (what tests, exit codes and D-Bus
 * error names key on) and the original error in `cause`. Messages name what was wrong (file, line, key, digest).
 */

/** Every code the agent can raise, grouped by domain. One line each; the CLI and D-Bus tables map these. */
export type ErrorCode =
  // configuration
  | 'CONFIG_INVALID' // a config file is malformed (names file, line, key)
  | 'USAGE' // bad command-line usage
  // system commands and mounts
  | 'COMMAND_FAILED' // an external tool exited non-zero or could not start
  | 'DEVICE_NOT_FOUND' // no block device carries the wanted label
  | 'DEVICE_AMBIGUOUS' // several block devices carry the wanted label
  | 'MOUNT_FAILED'
  // OCI registry and images
  | 'REFERENCE_INVALID' // an image reference cannot be parsed
  | 'REGISTRY_UNREACHABLE' // connection refused / DNS / timeout after retries
  | 'REGISTRY_NOT_FOUND' // 404 for a manifest or blob
  | 'REGISTRY_UNAUTHORIZED' // 401/403 after trying the credentials we have
  | 'REGISTRY_ERROR' // other HTTP failure
  | 'MANIFEST_INVALID' // unknown media type, malformed JSON, no matching platform
  | 'DIGEST_MISMATCH' // content does not hash to its digest
  | 'BLOB_TRUNCATED' // stream ended before the advertised size
  | 'UNPACK_UNSAFE' // a tar entry would land outside the target
  | 'UNPACK_FAILED' // a tar entry could not be applied
  // staging
  | 'NO_SPACE' // not enough free space for the transition image
  | 'IMAGE_TOO_LARGE' // the rootfs does not fit the slot
  | 'STAGE_FAILED'
  | 'INTERRUPTED' // an upgrade stopped by a power cut or crash, found (and undone or finished) by the next run: records only
  | 'HOOK_FAILED'
  | 'FSCK_FAILED'
  | 'BUSY' // another upgrade holds the lock
  | 'DAEMON_LOST' // cosd left the bus while a job a client waited for was running (crashed or stopped)
  | 'ACCESS_DENIED' // the caller may not do this (D-Bus: state-changing methods are for uid 0, or whom polkit authorizes)
  // GRUB environment
  | 'GRUBENV_CORRUPT' // a block is not a valid GRUB environment block
  | 'GRUBENV_OVERFLOW' // the variables do not fit in the block
  // state
  | 'STATE_INVALID'
  | 'NOT_SUPPORTED'
  // boot health
  | 'CLOUD_INIT_FAILED' // a cloud-config stage ran with errors and --strict was given (elemental run-stage --strict)
  | 'HEALTH_CHECK_FAILED' // a required health check failed: the boot is not good (cosctl health-check)
  | 'IMAGE_FAILED_BEFORE' // the image failed boot assessment on this host; upgrading to it again needs --force
  // signatures: each names the check that failed
  | 'VERIFY_FAILED' // verification required but impossible (no policy, unreadable key or trusted root)
  | 'SIGNATURE_NOT_FOUND' // no signature of any known layout for the digest
  | 'SIGNATURE_DIGEST_MISMATCH' // the signed payload names another digest (or repository)
  | 'SIGNATURE_INVALID' // the signature does not verify over the payload (tampered payload, wrong key type)
  | 'SIGNATURE_UNTRUSTED_KEY' // signed by a key or CA we do not trust
  | 'SIGNATURE_IDENTITY_MISMATCH' // keyless: certificate SAN or OIDC issuer not in the policy
  | 'SIGNATURE_CERT_EXPIRED' // the certificate was not valid at the signing time
  | 'SIGNATURE_BAD_SET' // the transparency-log promise (SET) or inclusion proof does not verify
  | 'SIGNATURE_TLOG_MISSING'; // the policy requires a transparency-log entry and there is none

/** Base of all agent errors. */
export class AgentError extends Error {
  override name = 'AgentError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** A config file is malformed. Names the file, and the line and key where known. */
export class ConfigError extends AgentError {
  override name = 'ConfigError';
  readonly file: string;
  readonly line: number | undefined;
  readonly key: string | undefined;
  constructor(file: string, message: string, opts: { line?: number; key?: string; cause?: unknown } = {}) {
    const where = `${file}${opts.line !== undefined ? `:${opts.line}` : ''}${opts.key !== undefined ? ` (${opts.key})` : ''}`;
    super('CONFIG_INVALID', `${where}: ${message}`, { cause: opts.cause });
    this.file = file;
    this.line = opts.line;
    this.key = opts.key;
  }
}

/** An external command failed. Holds argv, the exit status and the tail of stderr. */
export class CommandError extends AgentError {
  override name = 'CommandError';
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string;
  constructor(
    description: string,
    argv: readonly string[],
    result: { exitCode: number | null; signal: string | null; stderrTail: string },
    options?: { cause?: unknown },
  ) {
    const status = result.signal !== null ? `signal ${result.signal}` : `exit ${result.exitCode}`;
    const tail = result.stderrTail.trim().split('\n').slice(-3).join(' | ');
    super('COMMAND_FAILED', `${description}: ${argv[0]} failed (${status})${tail ? `: ${tail}` : ''}`, options);
    this.argv = argv;
    this.exitCode = result.exitCode;
    this.signal = result.signal;
    this.stderrTail = result.stderrTail;
  }
}

/** Prefix a message while keeping the code: "Upgrading: pulling: ..." (rauc/bootc style context). */
export function withContext(context: string, err: unknown): AgentError {
  if (err instanceof AgentError) {
    const wrapped = new AgentError(err.code, `${context}: ${err.message}`, { cause: err });
    return wrapped;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new AgentError('STAGE_FAILED', `${context}: ${message}`, { cause: err });
}

/** The innermost AgentError code in a cause chain (context wrappers keep the code, so this is the same code). */
export function errorCode(err: unknown): ErrorCode | undefined {
  return err instanceof AgentError ? err.code : undefined;
}

/**
 * A job ended without reporting an outcome (its process was killed, crashed or ran out of memory): what it left on
 * the host is to be recovered as after a crash. STAGE_FAILED, the message says how it ended.
 */
export class JobLostError extends AgentError {
  override name = 'JobLostError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('STAGE_FAILED', message, options);
  }
}

/**
 * An error that says itself whether it is a cancel (the job's own verdict, from the process that ran it): a Cancel
 * that reached a job past its point of no return did not cancel it, whatever the caller's signal says.
 */
export function cancelVerdict(e: unknown): boolean | undefined {
  const v = typeof e === 'object' && e !== null ? (e as { cancelled?: unknown }).cancelled : undefined;
  return typeof v === 'boolean' ? v : undefined;
}

/** A job stopped at the user's request (Cancel, Ctrl-C) before its point of no return. */
export class CancelledError extends AgentError {
  override name = 'CancelledError';
  constructor(message = 'upgrade cancelled', options?: { cause?: unknown }) {
    super('STAGE_FAILED', message, options);
  }
}
