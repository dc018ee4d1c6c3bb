/**
 * Types shared by the OCI registry client (reference parsing, manifests, auth, HTTP). Pure declarations only.
 */
import type { SysRoot } from '../sys/root.ts';

/**
 * A parsed image reference. Docker Hub names are normalised: `alpine` is registry `docker.io`, repository
 * `library/alpine`, tag `latest`. A reference with a digest may also carry a tag (informative only: the digest wins).
 */
export interface ImageReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/** An OCI platform (`linux/arm64/v8`). */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

/** An image manifest (OCI image manifest or Docker v2 schema 2), validated. */
export interface ImageManifest {
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** An image index (OCI image index or Docker manifest list), validated. */
export interface ImageIndex {
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The image config blob (only the fields the agent reads are typed). */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  config?: { Labels?: Record<string, string> };
  [k: string]: unknown;
}

/** What `RegistryClient.resolve` returns: everything needed to pull one image by digest. */
export interface ResolvedImage {
  /** The reference as asked. */
  reference: ImageReference;
  /** Digest of the image MANIFEST that will be pulled (for an index: the selected platform manifest's digest). */
  digest: string;
  /** Digest of the index the reference pointed at, if it pointed at an index. */
  indexDigest?: string;
  manifest: ImageManifest;
  /** The manifest's exact bytes (signature checks need them). */
  manifestBytes: Buffer;
  config: ImageConfig;
  platform: Platform;
  /** Sum of the layer sizes. */
  compressedSize: number;
}

/** A manifest as fetched: its media type, digest (sha256 of the bytes, or the digest asked for) and bytes. */
export interface FetchedManifest {
  mediaType: string;
  digest: string;
  bytes: Buffer;
}

export interface RegistryClientOptions {
  /** Host root through which the auth files and registries.conf are read. Default: `/`. */
  root?: SysRoot;
  /**
   * Auth files, in order of precedence (first file holding an entry for the registry wins). Default:
   * `$REGISTRY_AUTH_FILE` (if set), `/run/containers/0/auth.json`, `/etc/containers/auth.json`,
   * `$HOME/.docker/config.json`, all read through `root`.
   */
  authFiles?: string[];
  /** registries.conf (TOML, v2 `[[registry]]` tables or v1 `[registries.insecure]`). Default `/etc/containers/registries.conf`. */
  registriesConf?: string;
  /** Environment for HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and lower-case forms). Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** How many times a failed request (5xx, 429, network error, broken blob stream) is retried. Default 4. */
  retries?: number;
  /** First backoff delay; doubled on each retry. Default 500 ms. */
  retryBaseMs?: number;
  /** Connect / idle-socket / first-response timeout per request. Default 30 s. */
  timeoutMs?: number;
  /** Platform to select from an index. Default: the host's (`hostPlatform()`). */
  platform?: Platform;
  /** Structured log sink (`oci.request`, `oci.retry` {what, attempt, of, delayMs, error}, `oci.token`, `oci.resume`, ...). */
  log?: (event: string, fields: Record<string, unknown>) => void;
  /** Aborts every request of this client, the one in flight and a retry's wait included (a cancelled upgrade). */
  signal?: AbortSignal;
}
