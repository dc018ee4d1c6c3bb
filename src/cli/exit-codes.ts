/**
 * The one table mapping error codes to cosctl exit codes. Scripts key on these; docs/exit-codes in the README is
 * generated from the same table (test/cli/exit-codes.test.ts checks they agree).
 */
import type { ErrorCode } from '../model/errors.ts';

export const EXIT_OK = 0;
/** `cosctl check`: the slot already holds the image, nothing new (rpm-ostree upgrade --check's 77). */
export const EXIT_UP_TO_DATE = 77;
/** An error that is not an AgentError (a bug): always 1. */
export const EXIT_INTERNAL = 1;

export const EXIT_CODES: Readonly<Record<ErrorCode, { exit: number; meaning: string }>> = {
  USAGE: { exit: 2, meaning: 'bad command-line usage' },
  CONFIG_INVALID: { exit: 3, meaning: 'a config file is malformed (the message names file, line, key)' },
  BUSY: { exit: 4, meaning: 'another upgrade or rollback is running' },
  NOT_SUPPORTED: { exit: 5, meaning: 'the request is not supported on this host or source' },
  ACCESS_DENIED: { exit: 6, meaning: 'the operation changes the system and needs root' },
  DAEMON_LOST: { exit: 7, meaning: 'cosd left the bus while the job ran; its outcome shows in LastTransaction once it is back' },
  REFERENCE_INVALID: { exit: 10, meaning: 'the image reference cannot be parsed' },
  REGISTRY_UNREACHABLE: { exit: 11, meaning: 'the registry could not be reached (after retries)' },
  REGISTRY_NOT_FOUND: { exit: 12, meaning: 'the image, tag or blob does not exist' },
  REGISTRY_UNAUTHORIZED: { exit: 13, meaning: 'the registry refused our credentials' },
  REGISTRY_ERROR: { exit: 14, meaning: 'the registry answered with an unexpected error' },
  MANIFEST_INVALID: { exit: 15, meaning: 'the manifest is malformed or has no image for this platform' },
  DIGEST_MISMATCH: { exit: 16, meaning: 'downloaded content does not match its digest' },
  BLOB_TRUNCATED: { exit: 17, meaning: 'a download ended early and could not be resumed' },
  VERIFY_FAILED: { exit: 20, meaning: 'signature verification is required but not configured (no key or identity, unreadable trust material)' },
  SIGNATURE_NOT_FOUND: { exit: 21, meaning: 'no signature found for the image digest' },
  SIGNATURE_DIGEST_MISMATCH: { exit: 22, meaning: 'the signature covers another digest or repository' },
  SIGNATURE_INVALID: { exit: 23, meaning: 'the signature does not verify over its payload' },
  SIGNATURE_UNTRUSTED_KEY: { exit: 24, meaning: 'signed by an untrusted key or certificate authority' },
  SIGNATURE_IDENTITY_MISMATCH: { exit: 25, meaning: 'the signer identity or OIDC issuer is not allowed by policy' },
  SIGNATURE_CERT_EXPIRED: { exit: 26, meaning: 'the signing certificate was not valid at the signing time' },
  SIGNATURE_BAD_SET: { exit: 27, meaning: 'the transparency-log entry (SET or inclusion proof) does not verify' },
  SIGNATURE_TLOG_MISSING: { exit: 28, meaning: 'the policy requires a transparency-log entry and there is none' },
  UNPACK_UNSAFE: { exit: 30, meaning: 'a layer entry would land outside the image' },
  UNPACK_FAILED: { exit: 31, meaning: 'a layer could not be applied' },
  NO_SPACE: { exit: 32, meaning: 'not enough free space on the slot partition' },
  IMAGE_TOO_LARGE: { exit: 33, meaning: 'the OS image does not fit in the slot size' },
  HOOK_FAILED: { exit: 34, meaning: 'an upgrade hook failed' },
  FSCK_FAILED: { exit: 35, meaning: 'the new image failed its filesystem check' },
  STAGE_FAILED: { exit: 36, meaning: 'staging failed (or was cancelled)' },
  INTERRUPTED: { exit: 37, meaning: 'an upgrade was interrupted (power cut or crash); the next run undid it (in the last-upgrade record)' },
  COMMAND_FAILED: { exit: 40, meaning: 'a system tool failed' },
  DEVICE_NOT_FOUND: { exit: 41, meaning: 'no partition carries the expected label' },
  MOUNT_FAILED: { exit: 42, meaning: 'a mount or unmount failed' },
  DEVICE_AMBIGUOUS: { exit: 43, meaning: 'several partitions carry the same label' },
  GRUBENV_CORRUPT: { exit: 50, meaning: 'a GRUB environment block is corrupt' },
  GRUBENV_OVERFLOW: { exit: 51, meaning: 'GRUB variables do not fit in the environment block' },
  STATE_INVALID: { exit: 52, meaning: 'the on-disk state is inconsistent' },
  CLOUD_INIT_FAILED: { exit: 65, meaning: 'a cloud-config stage had errors and --strict was given (exit 65, as elemental run-stage --strict)' },
  HEALTH_CHECK_FAILED: { exit: 60, meaning: 'a required health check failed: the boot is not good' },
  IMAGE_FAILED_BEFORE: { exit: 61, meaning: 'the image failed boot assessment on this host (--force stages it again)' },
};

export function exitCodeFor(code: ErrorCode | undefined): number {
  return code === undefined ? EXIT_INTERNAL : EXIT_CODES[code].exit;
}
