/**
 * The signature policy for one image: our own policy file (`/etc/cos-agent/policy.yaml`: keys, keyless identities,
 * trusted root, per-registry rules) merged with the cOS config keys (`COSIGN_PUBLIC_KEY_LOCATION` / `cosign-key`,
 * `COSIGN_REPOSITORY`). Key files and the trusted root are read from disk (through the root prefix), never fetched:
 * a location that is a URL, KMS or Kubernetes reference is refused.
 *
 * policy.yaml:
 *   default:                       # applies to every image
 *     keys: [/etc/cos-agent/keys/release.pub]
 *     trustedRoot: /etc/cos-agent/trusted_root.json
 *     identities:
 *       - subject: https://github.com/acme/os/.github/workflows/release.yml@refs/heads/main
 *         issuer: https://token.actions.githubusercontent.com
 *       - subjectRegExp: '.*@acme\.example'   # matched whole (anchored)
 *         issuer: https://accounts.google.com
 *     requireTlog: true             # default: true when the trusted root has a transparency log
 *     requireRepository: false      # check the simple-signing docker-reference names the pulled repository
 *     signatureRepository: reg.example/acme/signatures   # like COSIGN_REPOSITORY
 *   registries:                    # the longest matching prefix of registry/repository overrides default's fields
 *     - match: registry.example.com/os
 *       keys: [/etc/cos-agent/keys/os.pub]
 *   dirSources: refuse             # refuse `dir:` upgrades (a local tree has no signature); default: allow
 */
import { readFile } from 'node:fs/promises';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode, type YAMLMap } from 'yaml';
import { AgentError, ConfigError } from '../model/errors.ts';
import type { AgentConfig } from '../model/config.ts';
import type { IdentityRule, TrustPolicy } from '../model/signature.ts';
import { readOptionalText } from '../sys/files.ts';
import type { SysRoot } from '../sys/root.ts';

export const POLICY_FILE = '/etc/cos-agent/policy.yaml';
export const DEFAULT_TRUSTED_ROOT = '/etc/cos-agent/trusted_root.json';

interface Rule {
  keys?: string[];
  trustedRoot?: string;
  identities?: IdentityRule[];
  requireTlog?: boolean;
  requireRepository?: boolean;
  signatureRepository?: string;
}

export interface PolicyFile {
  default: Rule;
  registries: Array<Rule & { match: string }>;
  /** `dir:` sources (a local tree, e.g. the SUC upgrade container's own root): no signature can apply to them. */
  dirSources?: 'allow' | 'refuse';
}

export interface ImagePolicy {
  policy: TrustPolicy;
  /** Where signatures live (COSIGN_REPOSITORY / signatureRepository), when not the image's repository. */
  signatureRepository?: string;
  /** Files that made up the policy, for messages. */
  files: string[];
}

const RULE_KEYS = ['keys', 'trustedRoot', 'identities', 'requireTlog', 'requireRepository', 'signatureRepository'];

/** PURE: parse policy.yaml; every problem is a ConfigError naming the file, line and key. */
export function parsePolicyFile(text: string, file: string): PolicyFile {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const lineOf = (n: YamlNode | null | undefined): number | undefined => (n?.range ? lc.linePos(n.range[0]).line : undefined);
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    // prettyErrors is off (the message stays one line): the line comes from the error's offset.
    const line = e?.linePos?.[0].line ?? (e !== undefined ? lc.linePos(e.pos[0]).line : undefined);
    throw new ConfigError(file, `not valid YAML: ${e?.message ?? ''}`, line !== undefined ? { line } : {});
  }
  const fail = (msg: string, node: YamlNode | null | undefined, key: string): never => {
    const line = lineOf(node);
    throw new ConfigError(file, msg, { ...(line !== undefined ? { line } : {}), key });
  };
  const top = doc.contents;
  if (top === null || top === undefined) return { default: {}, registries: [] };
  if (!isMap(top)) return fail('the policy must be a mapping', top, '(top)');

  const str = (n: unknown, key: string): string => {
    if (isScalar(n) && typeof n.value === 'string' && n.value !== '') return n.value;
    return fail('must be a non-empty string', n as YamlNode, key);
  };
  const bool = (n: unknown, key: string): boolean => {
    if (isScalar(n) && typeof n.value === 'boolean') return n.value;
    return fail('must be true or false', n as YamlNode, key);
  };
  const rule = (m: YAMLMap, where: string, extra: string[] = []): Rule => {
    const out: Rule = {};
    for (const pair of m.items) {
      const k = isScalar(pair.key) ? String(pair.key.value) : '';
      const key = `${where}.${k}`;
      const v = pair.value as YamlNode;
      if (extra.includes(k)) continue;
      if (!RULE_KEYS.includes(k)) fail(`unknown key (expected one of ${RULE_KEYS.join(', ')})`, pair.key as YamlNode, key);
      if (k === 'keys') {
        if (!isSeq(v)) fail('must be a list of key file paths', v, key);
        out.keys = (v as unknown as { items: unknown[] }).items.map((i, n) => str(i, `${key}[${n}]`));
      } else if (k === 'identities') {
        if (!isSeq(v)) fail('must be a list of {subject | subjectRegExp, issuer}', v, key);
        out.identities = (v as unknown as { items: unknown[] }).items.map((i, n) => {
          const ik = `${key}[${n}]`;
          if (!isMap(i)) return fail('must be a mapping with subject or subjectRegExp, and issuer', i as YamlNode, ik);
          const id: Partial<IdentityRule> = {};
          for (const p of i.items) {
            const f = isScalar(p.key) ? String(p.key.value) : '';
            if (f === 'subject') id.subject = str(p.value, `${ik}.subject`);
            else if (f === 'subjectRegExp') {
              id.subjectRegExp = str(p.value, `${ik}.subjectRegExp`);
              try {
                new RegExp(id.subjectRegExp);
              } catch (e) {
                fail(`not a valid regular expression: ${(e as Error).message}`, p.value as YamlNode, `${ik}.subjectRegExp`);
              }
            } else if (f === 'issuer') id.issuer = str(p.value, `${ik}.issuer`);
            else fail('unknown key (expected subject, subjectRegExp, issuer)', p.key as YamlNode, `${ik}.${f}`);
          }
          if ((id.subject === undefined) === (id.subjectRegExp === undefined)) fail('needs exactly one of subject or subjectRegExp', i, ik);
          if (id.issuer === undefined) fail('needs an issuer (the OIDC issuer URL)', i, ik);
          return id as IdentityRule;
        });
      } else if (k === 'requireTlog' || k === 'requireRepository') {
        out[k] = bool(v, key);
      } else {
        out[k as 'trustedRoot' | 'signatureRepository'] = str(v, key);
      }
    }
    return out;
  };

  const result: PolicyFile = { default: {}, registries: [] };
  for (const pair of top.items) {
    const k = isScalar(pair.key) ? String(pair.key.value) : '';
    const v = pair.value as YamlNode;
    if (k === 'apiVersion' || k === 'kind') continue;
    if (k === 'default') {
      if (!isMap(v)) fail('must be a mapping', v, 'default');
      result.default = rule(v as YAMLMap, 'default');
    } else if (k === 'registries') {
      if (!isSeq(v)) fail('must be a list of rules with a match', v, 'registries');
      result.registries = (v as unknown as { items: unknown[] }).items.map((i, n) => {
        if (!isMap(i)) return fail('must be a mapping', i as YamlNode, `registries[${n}]`);
        const match = i.get('match', true);
        return { ...rule(i, `registries[${n}]`, ['match']), match: str(match, `registries[${n}].match`) };
      });
    } else if (k === 'dirSources') {
      const d = str(v, 'dirSources');
      if (d !== 'allow' && d !== 'refuse') fail('must be allow or refuse', v, 'dirSources');
      result.dirSources = d as 'allow' | 'refuse';
    } else {
      fail('unknown key (expected default, registries, dirSources)', pair.key as YamlNode, k);
    }
  }
  return result;
}

/**
 * Whether a `dir:` upgrade source is allowed: policy.yaml's `dirSources` (default allow). A policy file that cannot
 * be read or parsed is an error (fail closed). Returns the file that refused, or null when allowed.
 */
export async function dirSourceRefusedBy(root: SysRoot, policyText?: string | null): Promise<string | null> {
  const policyPath = root.path(POLICY_FILE);
  const text = policyText !== undefined ? (policyText ?? undefined) : await readOptionalText(policyPath).catch((e: unknown) => {
    throw new ConfigError(policyPath, `cannot read: ${(e as Error).message}`, { cause: e });
  });
  if (text === undefined) return null;
  return parsePolicyFile(text, policyPath).dirSources === 'refuse' ? policyPath : null;
}

/** PURE: the rule for `registry/repository`: default, overridden by the longest matching registries[] prefix. */
export function ruleFor(file: PolicyFile, name: string): Rule {
  const matches = file.registries.filter((r) => name === r.match || name.startsWith(`${r.match.replace(/\/$/, '')}/`));
  matches.sort((a, b) => b.match.length - a.match.length);
  const { match: _m, ...best } = matches[0] ?? { match: '' };
  return { ...file.default, ...best };
}

function checkLocation(location: string, origin: string): void {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) || /^(env|k8s|kms|awskms|gcpkms|azurekms|hashivault|gitlab|pkcs11):/i.test(location)) {
    throw new ConfigError(origin, `key location ${location} is not a local file: keys must be PEM files on the host (trust stays local and offline)`, { key: 'key' });
  }
  if (!location.startsWith('/')) throw new ConfigError(origin, `key location ${location} must be an absolute path`, { key: 'key' });
}

/** Build the trust policy for an image from the policy file and the config, reading key files and the trusted root. */
export async function loadImagePolicy(
  root: SysRoot,
  config: AgentConfig,
  image: { registry: string; repository: string },
  /** policy.yaml as the daemon last validated it (null: none); undefined: read it from disk now. */
  policyText?: string | null,
): Promise<ImagePolicy> {
  const files: string[] = [];
  const policyPath = root.path(POLICY_FILE);
  const text = policyText !== undefined ? (policyText ?? undefined) : await readOptionalText(policyPath).catch((e: unknown) => {
    throw new ConfigError(policyPath, `cannot read: ${(e as Error).message}`, { cause: e });
  });
  const pf = text === undefined ? { default: {}, registries: [] } : parsePolicyFile(text, policyPath);
  if (text !== undefined) files.push(policyPath);
  const name = `${image.registry}/${image.repository}`;
  const rule = ruleFor(pf, name);

  const keyLocations: Array<[string, string]> = [
    ...(rule.keys ?? []).map((k): [string, string] => [k, policyPath]),
    ...config.cosign.publicKeyLocations.map((k): [string, string] => [k, config.origins['cosign.publicKeyLocations'] ?? 'COSIGN_PUBLIC_KEY_LOCATION']),
  ];
  const keys: TrustPolicy['keys'] = [];
  for (const [loc, origin] of keyLocations) {
    checkLocation(loc, origin);
    const p = root.path(loc);
    // A key that cannot be read is a verification failure (nothing can be verified with it), not a malformed file.
    const pem = await readFile(p, 'utf8').catch((e: Error) => {
      throw new AgentError('VERIFY_FAILED', `${p}: cannot read the public key (from ${origin}): ${e.message}`, { cause: e });
    });
    files.push(p);
    keys.push({ id: loc, pem });
  }

  let trustedRoot: unknown;
  const rootLoc = rule.trustedRoot ?? DEFAULT_TRUSTED_ROOT;
  const rootPath = root.path(rootLoc);
  // The default location is optional (no trusted root: no transparency log); a configured one must be there.
  const rootText = await (rule.trustedRoot === undefined ? readOptionalText(rootPath) : readFile(rootPath, 'utf8')).catch((e: unknown) => {
    throw new ConfigError(rootPath, `cannot read the trusted root: ${(e as Error).message}`, { cause: e });
  });
  if (rootText !== undefined) {
    try {
      trustedRoot = JSON.parse(rootText);
    } catch (e) {
      throw new ConfigError(rootPath, `the trusted root is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    files.push(rootPath);
  }
  const hasTlog = Array.isArray((trustedRoot as { tlogs?: unknown[] } | undefined)?.tlogs) && ((trustedRoot as { tlogs: unknown[] }).tlogs.length > 0);
  const signatureRepository = rule.signatureRepository ?? config.cosign.repository;
  return {
    policy: {
      keys,
      ...(trustedRoot !== undefined ? { trustedRoot } : {}),
      identities: rule.identities ?? [],
      requireTlog: rule.requireTlog ?? hasTlog,
      ...(rule.requireRepository ? { requireRepository: name } : {}),
    },
    ...(signatureRepository !== undefined ? { signatureRepository } : {}),
    files,
  };
}
