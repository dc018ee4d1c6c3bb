/**
 * Image reference parsing and formatting (PURE). Grammar of distribution/reference:
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ domain "/" ] path-component { "/" path-component }
 *   domain    := host [ ":" port ]     host: DNS name, IPv4, or "[" IPv6 "]"
 *
 * Decisions:
 * - The first component is a registry when it contains "." or ":", or is "localhost" (as Docker does); otherwise the
 *   registry is `docker.io`, and a single-component name gets `library/` (`alpine` -> `docker.io/library/alpine`).
 *   `index.docker.io` and `registry-1.docker.io` are normalised to `docker.io`.
 * - A leading `docker://` (the skopeo/containers transport prefix) is tolerated and stripped; any other transport
 *   (`oci:`, `dir:`, ...) is rejected: this client only talks to registries.
 * - No tag and no digest means tag `latest`. A digest must be `sha256:<64 lowercase hex>` or `sha512:<128 hex>`.
 *   With both tag and digest the digest is what is pulled; the tag is kept for display.
 */
import { AgentError } from '../model/errors.ts';
import type { ImageReference } from './types.ts';

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API actually answers. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

const DIGEST_RE = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const IPV6 = '\\[[a-fA-F0-9:.]+(?:%[\\w.-]+)?\\]';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6})(?::[0-9]{1,5})?$`);
const NAME_MAX = 255;

/** True for a well-formed `sha256:`/`sha512:` digest. */
export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

/** True for a well-formed tag. */
export function isTag(s: string): boolean {
  return TAG_RE.test(s);
}

function invalid(ref: string, why: string): AgentError {
  return new AgentError('REFERENCE_INVALID', `invalid image reference ${JSON.stringify(ref)}: ${why}`);
}

function normaliseRegistry(domain: string): string {
  const lower = domain.toLowerCase();
  if (lower === 'index.docker.io' || lower === DOCKER_HUB_API) return DOCKER_HUB;
  return lower;
}

/** A long name shortened for a message: its start and end. */
function displayName(name: string): string {
  return name.length > 80 ? `${name.slice(0, 40)}…${name.slice(-30)}` : name;
}

/** Parse an image reference; throws AgentError('REFERENCE_INVALID') naming the reference and what is wrong. */
export function parseReference(ref: string): ImageReference {
  let rest = ref;
  if (rest.startsWith('docker://')) rest = rest.slice('docker://'.length);
  if (rest === '') throw invalid(ref, 'it is empty');
  if (/\s/.test(rest)) throw invalid(ref, 'it contains whitespace');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rest) || /^(?:oci|oci-archive|dir|docker-archive|docker-daemon|containers-storage):/.test(rest)) {
    throw invalid(ref, 'only registry references are supported (optionally prefixed with docker://)');
  }

  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw invalid(ref, `digest ${JSON.stringify(digest)} is not sha256:<64 hex> or sha512:<128 hex>`);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTag(tag)) throw invalid(ref, `tag ${JSON.stringify(tag)} is not valid (letters, digits, _ . -, at most 128, not starting with . or -)`);
  }
  if (rest === '') throw invalid(ref, 'the repository name is missing');
  if (rest.length > NAME_MAX) throw invalid(ref, `the name is longer than ${NAME_MAX} characters`);

  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase()) {
      if (!DOMAIN_RE.test(first)) throw invalid(ref, `registry ${JSON.stringify(first)} is not a valid host[:port]`);
      const port = /:([0-9]+)$/.exec(first)?.[1];
      if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw invalid(ref, `port ${port} is out of range`);
      // A one-label host told from a Docker Hub namespace only by its capitals (`Reg/os`) is refused: lower-cased
      // (as registries.conf and auth.json match it) it would be written `reg/os`, which names Docker Hub (found by
      // test/fuzz/manifest.test.ts).
      if (!first.includes('.') && !first.includes(':') && first.toLowerCase() !== 'localhost' && !first.startsWith('[')) {
        throw invalid(ref, `registry ${JSON.stringify(first)} is a host name only by its capitals: write it in lower case with a domain or a port (e.g. ${first.toLowerCase()}:443)`);
      }
      registry = normaliseRegistry(first);
      repository = rest.slice(slash + 1);
    }
  }
  if (repository === '') throw invalid(ref, 'the repository name is missing');
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) {
      throw invalid(ref, component !== component.toLowerCase()
        ? 'repository names must be lowercase'
        : `repository component ${JSON.stringify(component)} is not valid (lowercase letters, digits, separators . _ __ -)`);
    }
  }
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  // The name as formatReference writes it (what docker checks too): `nginx` of 250 characters is
  // docker.io/library/nginx…, too long to parse back (found by test/fuzz/manifest.test.ts).
  const full = `${registry}/${repository}`;
  if (full.length > NAME_MAX) throw invalid(ref, `the name ${JSON.stringify(displayName(full))} is longer than ${NAME_MAX} characters`);
  if (tag === undefined && digest === undefined) tag = 'latest';

  const out: ImageReference = { registry, repository };
  if (tag !== undefined) out.tag = tag;
  if (digest !== undefined) out.digest = digest;
  return out;
}

/** `registry/repository[:tag][@digest]`; always fully qualified, so it parses back to the same reference. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The tag or digest to ask the registry for: the digest when there is one. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** Host[:port] that answers the registry API for this registry name (Docker Hub's API lives elsewhere). */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** The host part of `host[:port]` (brackets kept off IPv6: `[::1]:5000` -> `::1`). */
export function registryHostname(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}

/** True for registries on loopback (127.0.0.0/8, localhost, ::1): those are spoken to over plain HTTP, as Docker does. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registryHostname(registry).toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (host === '::1' || host === '0:0:0:0:0:0:0:1') return true;
  return /^127\.(?:\d{1,3})\.(?:\d{1,3})\.(?:\d{1,3})$/.test(host);
}
