/**
 * THE table of D-Bus error names: every agent error code has one name `io.costoolkit.Agent1.Error.<Name>`. The
 * service answers failed calls with it, the client maps it back to the same code, so `cosctl` over D-Bus exits
 * with the same code as in-process. Pure data and two lookups; no dbus-next here.
 */
import type { ErrorCode } from '../model/errors.ts';

export const ERROR_PREFIX = 'io.costoolkit.Agent1.Error.';

/** Agent error code -> the last part of its D-Bus error name. One line each; names are unique. */
export const DBUS_ERROR_NAMES: Readonly<Record<ErrorCode, string>> = {
  USAGE: 'InvalidArgs', // a bad request: unknown option key, wrong value type, no image configured
  DAEMON_LOST: 'DaemonLost', // never sent by cosd: the client's own code when cosd leaves the bus mid-job
  ACCESS_DENIED: 'AccessDenied', // the caller is not uid 0 (nor authorized by polkit where it runs)
  BUSY: 'Busy', // another job runs; the message names its transaction
  NOT_SUPPORTED: 'NotSupported',
  CONFIG_INVALID: 'ConfigInvalid',
  COMMAND_FAILED: 'CommandFailed',
  DEVICE_NOT_FOUND: 'DeviceNotFound',
  DEVICE_AMBIGUOUS: 'DeviceAmbiguous',
  MOUNT_FAILED: 'MountFailed',
  REFERENCE_INVALID: 'ReferenceInvalid',
  REGISTRY_UNREACHABLE: 'RegistryUnreachable',
  REGISTRY_NOT_FOUND: 'RegistryNotFound',
  REGISTRY_UNAUTHORIZED: 'RegistryUnauthorized',
  REGISTRY_ERROR: 'RegistryError',
  MANIFEST_INVALID: 'ManifestInvalid',
  DIGEST_MISMATCH: 'DigestMismatch',
  BLOB_TRUNCATED: 'BlobTruncated',
  UNPACK_UNSAFE: 'UnpackUnsafe',
  UNPACK_FAILED: 'UnpackFailed',
  NO_SPACE: 'NoSpace',
  IMAGE_TOO_LARGE: 'ImageTooLarge',
  STAGE_FAILED: 'StageFailed',
  INTERRUPTED: 'Interrupted',
  HOOK_FAILED: 'HookFailed',
  FSCK_FAILED: 'FsckFailed',
  GRUBENV_CORRUPT: 'GrubenvCorrupt',
  GRUBENV_OVERFLOW: 'GrubenvOverflow',
  STATE_INVALID: 'StateInvalid',
  HEALTH_CHECK_FAILED: 'HealthCheckFailed',
  CLOUD_INIT_FAILED: 'CloudInitFailed',
  IMAGE_FAILED_BEFORE: 'ImageFailedBefore',
  VERIFY_FAILED: 'VerifyFailed',
  SIGNATURE_NOT_FOUND: 'SignatureNotFound',
  SIGNATURE_DIGEST_MISMATCH: 'SignatureDigestMismatch',
  SIGNATURE_INVALID: 'SignatureInvalid',
  SIGNATURE_UNTRUSTED_KEY: 'SignatureUntrustedKey',
  SIGNATURE_IDENTITY_MISMATCH: 'SignatureIdentityMismatch',
  SIGNATURE_CERT_EXPIRED: 'SignatureCertExpired',
  SIGNATURE_BAD_SET: 'SignatureBadSet',
  SIGNATURE_TLOG_MISSING: 'SignatureTlogMissing',
};

/** Errors the bus itself (or another peer) sends, and what they mean to the agent's caller. */
const FOREIGN: Readonly<Record<string, ErrorCode>> = {
  'org.freedesktop.DBus.Error.AccessDenied': 'ACCESS_DENIED', // the policy file refused the call
  'org.freedesktop.DBus.Error.InvalidArgs': 'USAGE', // wrong signature
  'org.freedesktop.DBus.Error.UnknownMethod': 'NOT_SUPPORTED', // an older daemon without this method
  'org.freedesktop.DBus.Error.ServiceUnknown': 'NOT_SUPPORTED', // no daemon on the bus
  'org.freedesktop.DBus.Error.NameHasNoOwner': 'NOT_SUPPORTED',
};

const BY_NAME: ReadonlyMap<string, ErrorCode> = new Map(
  (Object.entries(DBUS_ERROR_NAMES) as Array<[ErrorCode, string]>).map(([code, name]) => [`${ERROR_PREFIX}${name}`, code]),
);

/** Whether `s` is one of the agent's error codes (a code read back from a record or a message). */
export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(DBUS_ERROR_NAMES, s);
}

/** The full D-Bus error name of an agent error code. */
export function dbusErrorName(code: ErrorCode): string {
  return `${ERROR_PREFIX}${DBUS_ERROR_NAMES[code]}`;
}

/** The agent error code of a D-Bus error name, or undefined for a name neither the agent nor the bus defines. */
export function errorCodeOf(name: string): ErrorCode | undefined {
  return BY_NAME.get(name) ?? FOREIGN[name];
}
