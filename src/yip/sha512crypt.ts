/**
 * SHA-512 crypt (`$6$`, Ulrich Drepper's specification, 5000 rounds by default), what yip's entities write for a
 * plain-text password in /etc/shadow (tredoe/osutil sha512_crypt): `$6$<8 random [0-9a-zA-Z]>$<86 chars>`. node:crypto
 * has SHA-512 but not this construction; no npm package is needed for 60 lines.
 */
import { createHash, randomInt } from 'node:crypto';

const B64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const SALT_CHARS = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

const sha512 = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha512');
  for (const p of parts) h.update(p);
  return h.digest();
};

/** `len` bytes of `digest` repeated (the P and S sequences of the specification). */
function repeatTo(digest: Buffer, len: number): Buffer {
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i += digest.length) digest.copy(out, i, 0, Math.min(digest.length, len - i));
  return out;
}

function b64From24(b2: number, b1: number, b0: number, n: number): string {
  let w = (b2 << 16) | (b1 << 8) | b0;
  let out = '';
  for (let i = 0; i < n; i++) {
    out += B64[w & 0x3f];
    w >>= 6;
  }
  return out;
}

const ORDER: ReadonlyArray<readonly [number, number, number]> = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48], [28, 49, 7], [50, 8, 29],
  [9, 30, 51], [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13], [56, 14, 35], [15, 36, 57], [37, 58, 16],
  [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
];

/** The `$6$` hash of `password` with `salt` (at most 16 characters are used) and `rounds` (5000: not written). */
export function sha512Crypt(password: string, salt: string, rounds = 5000): string {
  const key = Buffer.from(password);
  const s = Buffer.from(salt.slice(0, 16));
  const b = sha512(key, s, key);
  const a = createHash('sha512').update(key).update(s).update(repeatTo(b, key.length));
  for (let n = key.length; n > 0; n >>= 1) a.update(n & 1 ? b : key);
  const aDigest = a.digest();
  const dp = createHash('sha512');
  for (let i = 0; i < key.length; i++) dp.update(key);
  const p = repeatTo(dp.digest(), key.length);
  const ds = createHash('sha512');
  for (let i = 0; i < 16 + (aDigest[0] as number); i++) ds.update(s);
  const sSeq = repeatTo(ds.digest(), s.length);
  let c = aDigest;
  for (let i = 0; i < rounds; i++) {
    const h = createHash('sha512');
    h.update(i & 1 ? p : c);
    if (i % 3 !== 0) h.update(sSeq);
    if (i % 7 !== 0) h.update(p);
    h.update(i & 1 ? c : p);
    c = h.digest();
  }
  let out = '';
  for (const [x, y, z] of ORDER) out += b64From24(c[x] as number, c[y] as number, c[z] as number, 4);
  out += b64From24(0, 0, c[63] as number, 2);
  return `$6$${rounds === 5000 ? '' : `rounds=${rounds}$`}${salt.slice(0, 16)}$${out}`;
}

/** A new hash with an 8-character salt of [0-9a-zA-Z], as yip's entities make them. */
export function hashPassword(password: string): string {
  let salt = '';
  for (let i = 0; i < 8; i++) salt += SALT_CHARS[randomInt(SALT_CHARS.length)];
  return sha512Crypt(password, salt);
}
