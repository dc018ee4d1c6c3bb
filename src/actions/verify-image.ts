/**
 * Verify an image's signatures before a single byte of it is written: discover candidates in every cosign layout
 * (src/oci/signatures.ts), check them against the policy (src/verify, pure), fail closed with the code of the check
 * that failed. A multi-arch image is accepted through a signature over the index the tag resolved to (cosign's
 * default) or over the platform manifest being staged (cosign --recursive); the registry client already checked
 * that the platform manifest is the one the verified index lists, by digest.
 */
import type { AgentConfig } from '../model/config.ts';
import type { RejectedSignature, VerifiedSignature } from '../model/signature.ts';
import { findSignatures } from '../oci/signatures.ts';
import { RegistryClient } from '../oci/registry.ts';
import { formatReference, parseReference } from '../oci/reference.ts';
import { AgentError, withContext } from '../model/errors.ts';
import { loadActionConfig } from '../host/config.ts';
import type { AgentDeps } from '../host/deps.ts';
import type { ImageReference, ResolvedImage } from '../oci/types.ts';
import { checkPolicy, requireVerified, verifySignatures } from '../verify/index.ts';
import type { SysRoot } from '../sys/root.ts';
import { loadImagePolicy, POLICY_FILE } from '../config/verify-policy.ts';

export interface ImageVerification {
  /** The digest whose signature was accepted (the index or the platform manifest). */
  signedDigest: string;
  signatures: VerifiedSignature[];
  /** Rejected candidates seen on the way (informational when something else was accepted). */
  rejected: RejectedSignature[];
  /** One line for logs and state.yaml: who signed what. */
  summary: string;
}

export function describeSignature(s: VerifiedSignature): string {
  const who = s.mode === 'key' ? `key ${s.keyId ?? '?'}` : `${s.identity ?? '?'} (issuer ${s.issuer ?? '?'})`;
  const log = s.logIndex !== undefined ? `, tlog index ${s.logIndex}` : '';
  return `${who} signed ${s.digest} [${s.kind}${log}]`;
}

/**
 * Before any registry request: the trust policy for `ref` can accept a signature at all (keys or identities, and
 * usable), else VERIFY_FAILED naming the fix. An upgrade or verify with verification on and nothing to verify with
 * fails here, not after a download.
 */
export async function preflightVerification(root: SysRoot, config: AgentConfig, ref: ImageReference, policyText?: string | null): Promise<void> {
  const { policy } = await loadImagePolicy(root, config, ref, policyText);
  if (policy.keys.length === 0 && policy.identities.length === 0) {
    throw new AgentError('VERIFY_FAILED', `signature verification is on, but no public key or keyless identity is configured for ${formatReference({ registry: ref.registry, repository: ref.repository })}: ` +
      `set COSIGN_PUBLIC_KEY_LOCATION in /etc/cos-upgrade-image, or give keys or identities in ${POLICY_FILE}, or pass --no-verify (VERIFY=false) to skip verification`);
  }
  checkPolicy(policy);
}

export async function verifyImage(
  root: SysRoot,
  config: AgentConfig,
  registry: RegistryClient,
  ref: ImageReference,
  image: ResolvedImage,
  /** policy.yaml from the daemon's last valid snapshot (null: none); undefined: read from disk. */
  policyText?: string | null,
): Promise<ImageVerification> {
  const { policy, signatureRepository } = await loadImagePolicy(root, config, ref, policyText);
  checkPolicy(policy);
  const name = formatReference({ registry: ref.registry, repository: ref.repository });
  const digests = image.indexDigest !== undefined ? [image.indexDigest, image.digest] : [image.digest];
  const rejected: RejectedSignature[] = [];
  let found = 0;
  for (const digest of digests) {
    const candidates = await findSignatures(registry, ref, digest, signatureRepository !== undefined ? { signatureRepository } : {});
    found += candidates.simpleSigning.length + candidates.bundles.length;
    const report = verifySignatures(candidates, policy, { allowedDigests: [digest] });
    if (report.accepted.length > 0) {
      return { signedDigest: digest, signatures: report.accepted, rejected: [...rejected, ...report.rejected], summary: report.accepted.map(describeSignature).join('; ') };
    }
    rejected.push(...report.rejected);
  }
  // Nothing accepted: throws the most specific SIGNATURE_* code (SIGNATURE_NOT_FOUND when there was no candidate).
  requireVerified({ digest: image.digest, accepted: [], rejected: found === 0 ? [] : rejected }, name);
  throw new Error('unreachable: requireVerified accepted an empty report');
}

export interface VerifyOutcome extends ImageVerification {
  image: string;
  digest: string;
  indexDigest: string | null;
}

/** `cosctl verify IMAGE`: resolve the tag to a digest and verify it under the host's policy, writing nothing. */
export async function verifyReference(deps: AgentDeps, image: string): Promise<VerifyOutcome> {
  const { config } = await loadActionConfig(deps);
  const ref = parseReference(image.replace(/^(docker|oci):(\/\/)?/, ''));
  await preflightVerification(deps.root, config, ref, deps.config?.()?.policyText);
  const registry = new RegistryClient({ root: deps.root, env: deps.env, ...deps.registry });
  const resolved = await registry.resolve(ref).catch((e: unknown) => { throw withContext(`resolving ${formatReference(ref)}`, e); });
  const v = await verifyImage(deps.root, config, registry, { ...ref, digest: resolved.digest }, resolved, deps.config?.()?.policyText);
  return { ...v, image: formatReference(ref), digest: resolved.digest, indexDigest: resolved.indexDigest ?? null };
}
