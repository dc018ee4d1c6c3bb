/**
 * Test helper: an INDEPENDENT interpreter for the subset of GRUB script that cOS's real boot files use, so tests can
 * say "what GRUB boots" without trusting src/host/boot-model.ts.
 *
 * It runs the real text of cOS v0.8.14 grub.cfg.tmpl (rendered with the default labels) and, sourced through
 * `/grubcustom` exactly as 08_boot_assessment.yaml installs it, the real `/grub_boot_assessment` (both taken from the
 * YAML file). `source (loop0)/etc/cos/bootargs.cfg` runs the real bootargs.cfg.tmpl (cos-layout.md 3.4).
 *
 * Language subset: words with '...' and "..." quoting and backslash escapes, `$var` / `${var}` expansion (unquoted
 * expansions split on blanks, as GRUB does), `#` comments, `;` and newlines, `if LIST; then LIST [elif LIST; then
 * LIST]... [else LIST] fi`, `menuentry WORDS { BODY }` (the body is recorded; booting the entry runs it).
 * Commands: set, unset, [ / test (a lone string, -n, -z, =, ==, !=, !, -a, -o), search (--file / --label,
 * --set[=VAR]), load_env -f, save_env -f, source, loopback [-d], linux, initrd; everything else (insmod, echo ...)
 * is a no-op that succeeds.
 *
 * GRUB semantics kept: variables are one global namespace (an entry's `set` is seen by the next entry tried);
 * assigning `root` strips surrounding parentheses (grub_env_write_root); a failing command does not stop a script;
 * an entry boots when its `linux` loaded a kernel; `default` is an entry id, title or index (empty or unknown: 0);
 * when the chosen entry fails inside GRUB, the blank-separated `fallback` list is walked in order (each number or id is
 * taken off the list as it is tried); `loopback` refuses a device name that already exists (the loop0 bug,
 * cos-layout.md 4.2); `save_env` writes into an existing env block only (GRUB cannot create one), and an unset
 * variable is deleted from it.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

// ---------------------------------------------------------------------------------------------------------------
// The virtual world GRUB sees

/** An OS image file (ext2 or squashfs): its filesystem label, and optionally its own bootargs.cfg text. */
export interface GrubImage {
  label: string | null;
  /** Text of /etc/cos/bootargs.cfg inside the image (default: the real bootargs.cfg.tmpl). */
  bootargs?: string;
  /** Free for the caller (e.g. an inode number) to find the image again in the result. */
  tag?: unknown;
}

export type GrubFile = { env: Map<string, string> } | { image: GrubImage } | { text: string };

export interface GrubPartition {
  label: string;
  /** Files by absolute path on the partition ("/grubenv", "/cOS/active.img"). */
  files: Map<string, GrubFile>;
}

/** Partitions in disk order (GRUB's `search` takes the first match). */
export interface GrubWorld {
  partitions: GrubPartition[];
}

export interface EnvWrite {
  /** Label of the partition that holds the env block. */
  partition: string;
  path: string;
  /** What save_env wrote (null: deleted, the variable was unset). */
  vars: Record<string, string | null>;
}

export interface GrubBoot {
  /** Id of the entry that booted (its title when it has no id); null: no entry could boot. */
  entry: string | null;
  /** Menu index of the entry that booted. */
  index: number | null;
  /** Entries started, in order (the first is the default choice; the others came from `fallback`). */
  tried: string[];
  /** The image loop-mounted by the booting entry, and where its file is. */
  image: GrubImage | null;
  file: { partition: string; path: string } | null;
  /** Kernel path as given to `linux` ("(loop0)/boot/vmlinuz"). */
  kernel: string | null;
  /** The kernel command line built by `linux` (its arguments after the kernel, blank-joined), without BOOT_IMAGE. */
  cmdline: string | null;
  /** Every save_env, in order (already applied to the world). */
  writes: EnvWrite[];
  /** GRUB's variables when the boot happened (or when everything failed). */
  vars: Map<string, string>;
  /** Errors GRUB printed, in order ("loopback: file not found ..."). */
  errors: string[];
}

export interface BootOptions {
  /** The grub.cfg text to run (default: the real cOS grub.cfg.tmpl, rendered). */
  grubCfg?: string;
  /** The text a `source (loopN)/etc/cos/bootargs.cfg` runs when the image has none (default: bootargs.cfg.tmpl). */
  bootargs?: string;
  /** Label of the partition grub.cfg was loaded from: GRUB's initial `root` (default COS_STATE). */
  rootLabel?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// The real cOS files

const COS_DIR = fileURLToPath(new URL('../../../shared/cos-v0.8.14/', import.meta.url));

export const COS_LABELS: Readonly<Record<string, string>> = {
  STATE_LABEL: 'COS_STATE',
  ACTIVE_LABEL: 'COS_ACTIVE',
  PASSIVE_LABEL: 'COS_PASSIVE',
  RECOVERY_LABEL: 'COS_RECOVERY',
  SYSTEM_LABEL: 'COS_SYSTEM',
  OEM_LABEL: 'COS_OEM',
};

function render(text: string): string {
  return text.replace(/@([A-Z_]+)@/g, (m, name: string) => {
    const v = COS_LABELS[name];
    if (v === undefined) throw new Error(`unknown template variable ${m}`);
    return v;
  });
}

/** The real grub.cfg.tmpl of cOS v0.8.14, labels filled in. */
export function cosGrubCfg(): string {
  return render(readFileSync(`${COS_DIR}grub2/grub.cfg.tmpl`, 'utf8'));
}

/** The real bootargs.cfg.tmpl of cOS v0.8.14, labels filled in. */
export function cosBootargs(): string {
  return render(readFileSync(`${COS_DIR}grub2/bootargs.cfg.tmpl`, 'utf8'));
}

interface YipStep {
  name?: string;
  commands?: string[];
  files?: Array<{ path?: string; content?: string }>;
}

/**
 * From the real 08_boot_assessment.yaml: the `content` of the file whose path ends in grub_boot_assessment, and the
 * heredoc body the "Hook boot assessment grub configuration" command appends to /grubcustom.
 */
let assessmentCache: { grubcustom: string; grubBootAssessment: string } | undefined;

export function cosBootAssessment(): { grubcustom: string; grubBootAssessment: string } {
  assessmentCache ??= readBootAssessment();
  return { ...assessmentCache };
}

function readBootAssessment(): { grubcustom: string; grubBootAssessment: string } {
  const doc = parseYaml(readFileSync(`${COS_DIR}oem/08_boot_assessment.yaml`, 'utf8'), { merge: true }) as { stages: Record<string, YipStep[]> };
  let grubBootAssessment: string | undefined;
  let grubcustom: string | undefined;
  for (const steps of Object.values(doc.stages)) {
    for (const step of steps) {
      for (const f of step.files ?? []) {
        if (f.path?.endsWith('grub_boot_assessment') && f.content !== undefined) grubBootAssessment ??= f.content;
      }
      if (step.name === 'Hook boot assessment grub configuration') {
        const cmd = step.commands?.[0] ?? '';
        const lines = cmd.split('\n');
        const start = lines.findIndex((l) => /<<\s*'?EOF'?/.test(l));
        const end = lines.findIndex((l, i) => i > start && l.trim() === 'EOF');
        if (start >= 0 && end > start) grubcustom ??= `${lines.slice(start + 1, end).join('\n')}\n`;
      }
    }
  }
  if (grubBootAssessment === undefined || grubcustom === undefined) throw new Error('08_boot_assessment.yaml: boot assessment snippets not found');
  return { grubcustom, grubBootAssessment };
}

/** The files 08_boot_assessment installs on COS_STATE (after-install / after-upgrade): /grubcustom and /grub_boot_assessment. */
export function cosAssessmentFiles(): Array<[string, GrubFile]> {
  const { grubcustom, grubBootAssessment } = cosBootAssessment();
  return [['/grubcustom', { text: grubcustom }], ['/grub_boot_assessment', { text: grubBootAssessment }]];
}

/** A deep copy of a world (env maps and file maps copied; image objects shared, they are never modified). */
export function cloneWorld(w: GrubWorld): GrubWorld {
  return {
    partitions: w.partitions.map((p) => ({
      label: p.label,
      files: new Map([...p.files].map(([k, f]) => [k, 'env' in f ? { env: new Map(f.env) } : f])),
    })),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Lexer and parser

type Part = { kind: 'lit'; text: string; quoted: boolean } | { kind: 'var'; name: string; quoted: boolean };
interface Word { parts: Part[] }
type Token = { type: 'word'; word: Word } | { type: 'sep' };

type Stmt =
  | { kind: 'cmd'; words: Word[] }
  | { kind: 'if'; branches: Array<{ cond: Stmt[]; body: Stmt[] }>; otherwise: Stmt[] | null }
  | { kind: 'menuentry'; words: Word[]; body: Stmt[] };

const VAR_CHAR = /[A-Za-z0-9_]/;

function lex(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = src.length;
  while (i < n) {
    const c = src[i] as string;
    if (c === '\\' && src[i + 1] === '\n') { i += 2; continue; }
    if (c === ' ' || c === '\t' || c === '\r') { i++; continue; }
    if (c === '\n' || c === ';') { out.push({ type: 'sep' }); i++; continue; }
    if (c === '#') {
      while (i < n && src[i] !== '\n') i++;
      continue;
    }
    // A word: runs until an unquoted blank, newline or ';'.
    const parts: Part[] = [];
    const lit = (text: string, quoted: boolean): void => {
      const last = parts[parts.length - 1];
      if (last !== undefined && last.kind === 'lit' && last.quoted === quoted) last.text += text;
      else parts.push({ kind: 'lit', text, quoted });
    };
    const variable = (quoted: boolean): void => {
      // At '$'.
      i++;
      if (src[i] === '{') {
        const close = src.indexOf('}', i);
        if (close < 0) throw new Error(`grub-script: unterminated \${ at ${i}`);
        parts.push({ kind: 'var', name: src.slice(i + 1, close), quoted });
        i = close + 1;
        return;
      }
      let j = i;
      if (j < n && /[?#@*]/.test(src[j] as string)) j++;
      else while (j < n && VAR_CHAR.test(src[j] as string)) j++;
      if (j === i) { lit('$', quoted); return; }
      parts.push({ kind: 'var', name: src.slice(i, j), quoted });
      i = j;
    };
    while (i < n) {
      const d = src[i] as string;
      if (d === ' ' || d === '\t' || d === '\r' || d === '\n' || d === ';') break;
      if (d === '\\') {
        if (src[i + 1] === '\n') { i += 2; continue; }
        lit(src[i + 1] ?? '', false);
        i += 2;
        continue;
      }
      if (d === "'") {
        const close = src.indexOf("'", i + 1);
        if (close < 0) throw new Error(`grub-script: unterminated ' at ${i}`);
        lit(src.slice(i + 1, close), true);
        i = close + 1;
        continue;
      }
      if (d === '"') {
        i++;
        let any = false;
        while (i < n && src[i] !== '"') {
          const e = src[i] as string;
          if (e === '\\' && i + 1 < n && '"\\$\n'.includes(src[i + 1] as string)) {
            if (src[i + 1] !== '\n') lit(src[i + 1] as string, true);
            i += 2;
          } else if (e === '$') {
            variable(true);
          } else {
            lit(e, true);
            i++;
          }
          any = true;
        }
        if (i >= n) throw new Error('grub-script: unterminated "');
        if (!any) lit('', true);
        i++;
        continue;
      }
      if (d === '$') { variable(false); continue; }
      lit(d, false);
      i++;
    }
    out.push({ type: 'word', word: { parts } });
  }
  return out;
}

/** The text of a word made only of unquoted literal characters (keywords, braces), else null. */
function bare(w: Word): string | null {
  if (w.parts.length !== 1) return null;
  const p = w.parts[0] as Part;
  return p.kind === 'lit' && !p.quoted ? p.text : null;
}

class Parser {
  private pos = 0;
  private readonly toks: Token[];
  constructor(toks: Token[]) {
    this.toks = toks;
  }

  private peekWord(): Word | null {
    const t = this.toks[this.pos];
    return t?.type === 'word' ? t.word : null;
  }

  private skipSeps(): void {
    while (this.toks[this.pos]?.type === 'sep') this.pos++;
  }

  private expect(keyword: string): void {
    this.skipSeps();
    const w = this.peekWord();
    if (w === null || bare(w) !== keyword) throw new Error(`grub-script: expected "${keyword}" at token ${this.pos}`);
    this.pos++;
  }

  parseProgram(): Stmt[] {
    const list = this.parseList([]);
    this.skipSeps();
    if (this.pos < this.toks.length) throw new Error(`grub-script: unexpected "${bare(this.peekWord() as Word) ?? '?'}" at token ${this.pos}`);
    return list;
  }

  /** Statements until one of `stops` (or `}`) begins a command, or the end. */
  parseList(stops: readonly string[]): Stmt[] {
    const out: Stmt[] = [];
    for (;;) {
      this.skipSeps();
      const w = this.peekWord();
      if (w === null) return out;
      const b = bare(w);
      if (b !== null && (stops.includes(b) || b === '}')) return out;
      out.push(this.parseStatement());
    }
  }

  private parseStatement(): Stmt {
    const first = bare(this.peekWord() as Word);
    if (first === 'if') return this.parseIf();
    if (first === 'menuentry' || first === 'submenu') return this.parseMenuentry();
    const words: Word[] = [];
    for (let t = this.toks[this.pos]; t?.type === 'word'; t = this.toks[++this.pos]) words.push(t.word);
    return { kind: 'cmd', words };
  }

  private parseIf(): Stmt {
    this.pos++; // if
    const branches: Array<{ cond: Stmt[]; body: Stmt[] }> = [];
    let otherwise: Stmt[] | null = null;
    for (;;) {
      const cond = this.parseList(['then']);
      this.expect('then');
      const body = this.parseList(['elif', 'else', 'fi']);
      branches.push({ cond, body });
      this.skipSeps();
      const k = bare(this.peekWord() ?? { parts: [] });
      this.pos++;
      if (k === 'elif') continue;
      if (k === 'else') {
        otherwise = this.parseList(['fi']);
        this.expect('fi');
        break;
      }
      if (k === 'fi') break;
      throw new Error(`grub-script: unterminated if (got ${k ?? 'end of input'})`);
    }
    return { kind: 'if', branches, otherwise };
  }

  private parseMenuentry(): Stmt {
    const words: Word[] = [];
    for (;;) {
      const t = this.toks[this.pos];
      if (t === undefined) throw new Error('grub-script: menuentry without {');
      if (t.type === 'sep') throw new Error('grub-script: menuentry: { must end the line');
      this.pos++;
      if (bare(t.word) === '{') break;
      words.push(t.word);
    }
    const body = this.parseList([]);
    this.expect('}');
    return { kind: 'menuentry', words, body };
  }
}

const parsed = new Map<string, Stmt[]>();

function parseScript(text: string): Stmt[] {
  let p = parsed.get(text);
  if (p === undefined) {
    p = new Parser(lex(text)).parseProgram();
    parsed.set(text, p);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Execution

interface MenuEntry { title: string; id: string | null; body: Stmt[] }

interface Located {
  device: string;
  path: string;
  partition: GrubPartition | null;
  loop: { image: GrubImage; partition: string; path: string } | null;
}

const deviceName = (i: number): string => `hd0,gpt${i + 1}`;
const normPath = (p: string): string => `/${p.split('/').filter((s) => s !== '').join('/')}`;

class Grub {
  readonly vars = new Map<string, string>();
  readonly entries: MenuEntry[] = [];
  readonly writes: EnvWrite[] = [];
  readonly errors: string[] = [];
  readonly loops = new Map<string, { image: GrubImage; partition: string; path: string }>();
  loaded: { kernel: string; args: string[]; loop: string | null } | null = null;

  private readonly world: GrubWorld;
  private readonly opts: Required<BootOptions>;
  constructor(world: GrubWorld, opts: Required<BootOptions>) {
    this.world = world;
    this.opts = opts;
  }

  private error(msg: string): number {
    this.errors.push(msg);
    return 1;
  }

  private setVar(name: string, value: string): void {
    if (name === 'root' && value.startsWith('(') && value.endsWith(')')) value = value.slice(1, -1);
    this.vars.set(name, value);
  }

  /** Expand words into fields: quoted text always makes a field; unquoted expansions split on blanks. */
  expand(words: readonly Word[]): string[] {
    const out: string[] = [];
    for (const w of words) {
      let cur = '';
      let has = false;
      const push = (): void => {
        if (has) out.push(cur);
        cur = '';
        has = false;
      };
      for (const p of w.parts) {
        const text = p.kind === 'lit' ? p.text : (this.vars.get(p.name) ?? '');
        if (p.quoted || p.kind === 'lit') {
          cur += text;
          has = has || p.quoted || text !== '';
          continue;
        }
        const pieces = text.split(/[ \t\n]+/);
        for (const [k, piece] of pieces.entries()) {
          if (k > 0) push();
          if (piece !== '') {
            cur += piece;
            has = true;
          }
        }
      }
      push();
    }
    return out;
  }

  /** `(dev)/path` or `/path` on $root. */
  private locate(arg: string): Located | null {
    const m = /^\(([^)]*)\)(.*)$/.exec(arg);
    const device = m ? (m[1] as string) : (this.vars.get('root') ?? '');
    const p = normPath(m ? (m[2] as string) : arg);
    if (device === '') return null;
    const loop = this.loops.get(device);
    if (loop !== undefined) return { device, path: p, partition: null, loop };
    const idx = this.world.partitions.findIndex((_, i) => deviceName(i) === device);
    if (idx < 0) return null;
    return { device, path: p, partition: this.world.partitions[idx] as GrubPartition, loop: null };
  }

  execList(list: readonly Stmt[]): number {
    let status = 0;
    for (const s of list) status = this.exec(s);
    return status;
  }

  exec(s: Stmt): number {
    if (s.kind === 'if') {
      for (const b of s.branches) {
        if (this.execList(b.cond) === 0) return this.execList(b.body);
      }
      return s.otherwise !== null ? this.execList(s.otherwise) : 0;
    }
    if (s.kind === 'menuentry') {
      const f = this.expand(s.words.slice(1));
      let title: string | null = null;
      let id: string | null = null;
      for (let i = 0; i < f.length; i++) {
        const a = f[i] as string;
        if (a === '--id') id = f[++i] ?? null;
        else if (a.startsWith('--id=')) id = a.slice(5);
        else if (['--class', '--users', '--hotkey'].includes(a)) i++;
        else if (a.startsWith('--')) continue;
        else title ??= a;
      }
      this.entries.push({ title: title ?? '', id, body: s.body });
      return 0;
    }
    const f = this.expand(s.words);
    if (f.length === 0) return 0;
    return this.command(f[0] as string, f.slice(1));
  }

  private command(name: string, args: string[]): number {
    switch (name) {
      case 'set':
        for (const a of args) {
          const eq = a.indexOf('=');
          if (eq > 0) this.setVar(a.slice(0, eq), a.slice(eq + 1));
        }
        return 0;
      case 'unset':
        for (const a of args) this.vars.delete(a);
        return 0;
      case 'true':
        return 0;
      case 'false':
        return 1;
      case '[':
        if (args[args.length - 1] !== ']') return this.error('[: missing ]');
        return test(args.slice(0, -1)) ? 0 : 1;
      case 'test':
        return test(args) ? 0 : 1;
      case 'search':
        return this.search(args);
      case 'load_env':
        return this.loadEnv(args);
      case 'save_env':
        return this.saveEnv(args);
      case 'source':
      case '.':
        return this.source(args[0] ?? '');
      case 'loopback':
        return this.loopback(args);
      case 'linux':
      case 'linuxefi':
        return this.linux(args);
      case 'initrd':
      case 'initrdefi': {
        const at = this.locate(args[0] ?? '');
        return at !== null && at.loop !== null ? 0 : this.error(`initrd: cannot open ${args[0] ?? ''}`);
      }
      default:
        // insmod, echo, terminal_output, ...: no effect on what boots.
        return 0;
    }
  }

  private search(args: string[]): number {
    let by: 'file' | 'label' | 'uuid' = 'file';
    let setVar: string | null = null;
    const rest: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i] as string;
      if (a === '-f' || a === '--file') by = 'file';
      else if (a === '-l' || a === '--label') by = 'label';
      else if (a === '-u' || a === '--fs-uuid') by = 'uuid';
      else if (a === '--set' || a === '-s') setVar = 'root';
      else if (a.startsWith('--set=')) setVar = a.slice(6);
      else if (a.startsWith('--hint')) { if (!a.includes('=')) i++; }
      else if (a.startsWith('-')) continue;
      else rest.push(a);
    }
    const key = rest[0];
    if (key === undefined) return this.error('search: one argument expected');
    const idx = this.world.partitions.findIndex((p) => (by === 'label' ? p.label === key : by === 'file' ? p.files.has(normPath(key)) : false));
    if (idx < 0) return this.error(`search: no such device: ${key}`);
    if (setVar !== null) this.setVar(setVar, deviceName(idx));
    return 0;
  }

  private envFile(args: string[], cmd: string): { at: Located; env: Map<string, string>; names: string[] } | number {
    const i = args.indexOf('-f');
    const fileArg = i >= 0 ? args[i + 1] : undefined;
    const names = args.filter((a, k) => !(i >= 0 && (k === i || k === i + 1)) && !a.startsWith('-'));
    if (fileArg === undefined) return this.error(`${cmd}: only -f FILE is modelled`);
    const at = this.locate(fileArg);
    const file = at?.partition?.files.get(at.path);
    if (at === null || file === undefined) return this.error(`${cmd}: file not found: ${fileArg}`);
    if (!('env' in file)) return this.error(`${cmd}: invalid environment block: ${fileArg}`);
    return { at, env: file.env, names };
  }

  private loadEnv(args: string[]): number {
    const r = this.envFile(args, 'load_env');
    if (typeof r === 'number') return r;
    for (const [k, v] of r.env) if (r.names.length === 0 || r.names.includes(k)) this.setVar(k, v);
    return 0;
  }

  private saveEnv(args: string[]): number {
    const r = this.envFile(args, 'save_env');
    if (typeof r === 'number') return r;
    const next = new Map(r.env);
    const vars: Record<string, string | null> = {};
    for (const k of r.names) {
      const v = this.vars.get(k);
      if (v === undefined) next.delete(k);
      else next.set(k, v);
      vars[k] = v ?? null;
    }
    (r.at.partition as GrubPartition).files.set(r.at.path, { env: next });
    this.writes.push({ partition: (r.at.partition as GrubPartition).label, path: r.at.path, vars });
    return 0;
  }

  private source(arg: string): number {
    const at = this.locate(arg);
    if (at === null) return this.error(`source: no such device: ${arg}`);
    let text: string | undefined;
    if (at.loop !== null) {
      if (at.path === '/etc/cos/bootargs.cfg') text = at.loop.image.bootargs ?? this.opts.bootargs;
    } else {
      const file = at.partition?.files.get(at.path);
      if (file !== undefined && 'text' in file) text = file.text;
    }
    if (text === undefined) return this.error(`source: file not found: ${arg}`);
    return this.execList(parseScript(text));
  }

  private loopback(args: string[]): number {
    if (args[0] === '-d') {
      this.loops.delete(args[1] ?? '');
      return 0;
    }
    const [name, fileArg] = args;
    if (name === undefined || fileArg === undefined) return this.error('loopback: two arguments expected');
    if (this.loops.has(name)) return this.error(`loopback: device name already exists: ${name}`);
    const at = this.locate(fileArg);
    const file = at?.partition?.files.get(at.path);
    if (at === null || file === undefined || !('image' in file)) return this.error(`loopback: file not found: ${fileArg}`);
    this.loops.set(name, { image: file.image, partition: (at.partition as GrubPartition).label, path: at.path });
    return 0;
  }

  private linux(args: string[]): number {
    const kernel = args[0];
    if (kernel === undefined) return this.error('linux: filename expected');
    const at = this.locate(kernel);
    if (at === null || at.loop === null) return this.error(`linux: cannot open ${kernel}`);
    this.loaded = { kernel, args: args.slice(1), loop: at.device };
    return 0;
  }

  /** The menu entry `value` names (index, id, or title), or -1. */
  entryIndex(value: string): number {
    if (/^\d+$/.test(value)) {
      const n = Number(value);
      return n < this.entries.length ? n : -1;
    }
    const byId = this.entries.findIndex((e) => e.id === value);
    return byId >= 0 ? byId : this.entries.findIndex((e) => e.title === value);
  }

  /** Run one entry's body; whether it loaded a kernel (GRUB then boots it). */
  runEntry(index: number): boolean {
    this.loaded = null;
    const e = this.entries[index] as MenuEntry;
    this.vars.set('chosen', e.title);
    this.execList(e.body);
    if (this.loaded === null) this.errors.push(`entry ${e.id ?? e.title}: you need to load the kernel first`);
    return this.loaded !== null;
  }
}

/** GRUB `test` / `[`: strings, -n, -z, =, ==, !=, !, -a, -o (-o binds loosest). */
function test(args: string[]): boolean {
  let i = 0;
  const primary = (): boolean => {
    const a = args[i];
    if (a === '!') {
      i++;
      return !primary();
    }
    if (a === '-n' || a === '-z') {
      const s = args[i + 1] ?? '';
      i += 2;
      return a === '-n' ? s !== '' : s === '';
    }
    const op = args[i + 1];
    if (op === '=' || op === '==' || op === '!=') {
      const b = args[i + 2] ?? '';
      i += 3;
      return op === '!=' ? a !== b : a === b;
    }
    i++;
    return a !== undefined && a !== '';
  };
  const and = (): boolean => {
    let v = primary();
    while (args[i] === '-a') {
      i++;
      const r = primary();
      v = v && r;
    }
    return v;
  };
  if (args.length === 0) return false;
  let v = and();
  while (args[i] === '-o') {
    i++;
    const r = and();
    v = v || r;
  }
  return v;
}

/**
 * One pass of GRUB: run grub.cfg on the world (save_env writes land in the world), pick the default entry, run it,
 * walk `fallback` while entries fail inside GRUB. Returns what booted (entry null: nothing could).
 */
export function boot(world: GrubWorld, options: BootOptions = {}): GrubBoot {
  const opts: Required<BootOptions> = {
    grubCfg: options.grubCfg ?? cachedCfg(),
    bootargs: options.bootargs ?? cachedBootargs(),
    rootLabel: options.rootLabel ?? 'COS_STATE',
  };
  const g = new Grub(world, opts);
  const rootIdx = world.partitions.findIndex((p) => p.label === opts.rootLabel);
  if (rootIdx >= 0) g.vars.set('root', deviceName(rootIdx));
  g.execList(parseScript(opts.grubCfg));

  const tried: string[] = [];
  const result = (index: number | null): GrubBoot => {
    const e = index === null ? null : (g.entries[index] as MenuEntry);
    const loop = g.loaded?.loop != null ? g.loops.get(g.loaded.loop) : undefined;
    return {
      entry: e === null ? null : (e.id ?? e.title),
      index,
      tried,
      image: loop?.image ?? null,
      file: loop !== undefined ? { partition: loop.partition, path: loop.path } : null,
      kernel: g.loaded?.kernel ?? null,
      cmdline: g.loaded !== null ? g.loaded.args.join(' ') : null,
      writes: g.writes,
      vars: new Map(g.vars),
      errors: g.errors,
    };
  };
  if (g.entries.length === 0) return result(null);

  let first = g.entryIndex(g.vars.get('default') ?? '');
  if (first < 0) first = 0;
  const attempt = (i: number): boolean => {
    const e = g.entries[i] as MenuEntry;
    tried.push(e.id ?? e.title);
    return g.runEntry(i);
  };
  if (attempt(first)) return result(first);
  // grub_menu_execute_with_fallback: take the first word off `fallback`, try it, until the list is empty.
  for (;;) {
    const list = (g.vars.get('fallback') ?? '').trim();
    if (list === '') break;
    const [head, ...tail] = list.split(/\s+/);
    g.vars.set('fallback', tail.join(' '));
    const i = g.entryIndex(head as string);
    if (i < 0) continue;
    if (attempt(i)) return result(i);
  }
  g.loaded = null;
  return result(null);
}

let cfgCache: string | undefined;
let bootargsCache: string | undefined;
const cachedCfg = (): string => (cfgCache ??= cosGrubCfg());
const cachedBootargs = (): string => (bootargsCache ??= cosBootargs());

/** The parts of a kernel command line this suite cares about. */
export function readCmdline(cmdline: string): { rootLabel: string | null; liveLabel: string | null; imgFile: string | null; squashImg: string | null; upgradeFailure: boolean } {
  const tokens = cmdline.split(/\s+/).filter((t) => t !== '');
  const value = (key: string): string | null => {
    const t = tokens.findLast((x) => x.startsWith(`${key}=`));
    return t === undefined ? null : t.slice(key.length + 1);
  };
  const root = value('root');
  return {
    rootLabel: root !== null && root.startsWith('LABEL=') ? root.slice(6) : null,
    liveLabel: root !== null && root.startsWith('live:LABEL=') ? root.slice(11) : null,
    imgFile: value('cos-img/filename'),
    squashImg: value('rd.live.squashimg'),
    upgradeFailure: tokens.includes('upgrade_failure'),
  };
}

export interface CosWorldOptions {
  /** COS_OEM /grubenv (undefined: the file does not exist, as on a fresh install). */
  user?: Record<string, string>;
  /** COS_STATE /grub_oem_env (default { default_menu_entry: 'cOS' }). */
  oem?: Record<string, string>;
  /** COS_STATE /boot_assessment (default: an empty block). */
  assessment?: Record<string, string>;
  /** /grubcustom and /grub_boot_assessment on COS_STATE, as 08_boot_assessment installs them (default true). */
  assessmentInstalled?: boolean;
  /** cOS/active.img and cOS/passive.img on COS_STATE (null: missing); default labelled COS_ACTIVE / COS_PASSIVE. */
  active?: GrubImage | null;
  passive?: GrubImage | null;
  /** The recovery image on COS_RECOVERY (default img). */
  recovery?: 'img' | 'squashfs' | null;
}

/** A cOS disk as GRUB sees it (partitions in elemental's order: COS_GRUB, COS_OEM, COS_STATE, COS_RECOVERY, COS_PERSISTENT). */
export function cosWorld(o: CosWorldOptions = {}): GrubWorld {
  const env = (r: Record<string, string>): GrubFile => ({ env: new Map(Object.entries(r)) });
  const oem = new Map<string, GrubFile>();
  if (o.user !== undefined) oem.set('/grubenv', env(o.user));
  const state = new Map<string, GrubFile>([
    ['/grub_oem_env', env(o.oem ?? { default_menu_entry: 'cOS' })],
    ['/boot_assessment', env(o.assessment ?? {})],
  ]);
  if (o.assessmentInstalled !== false) for (const [k, f] of cosAssessmentFiles()) state.set(k, f);
  const active = o.active === undefined ? { label: 'COS_ACTIVE' } : o.active;
  const passive = o.passive === undefined ? { label: 'COS_PASSIVE' } : o.passive;
  if (active !== null) state.set('/cOS/active.img', { image: active });
  if (passive !== null) state.set('/cOS/passive.img', { image: passive });
  const recovery = new Map<string, GrubFile>();
  const flavour = o.recovery === undefined ? 'img' : o.recovery;
  if (flavour === 'img') recovery.set('/cOS/recovery.img', { image: { label: 'COS_SYSTEM' } });
  if (flavour === 'squashfs') recovery.set('/cOS/recovery.squashfs', { image: { label: null } });
  return cosDisk(oem, state, recovery);
}

/** The five cOS partitions in elemental's order, with the files of COS_OEM, COS_STATE and COS_RECOVERY. */
export function cosDisk(oem: Map<string, GrubFile>, state: Map<string, GrubFile>, recovery: Map<string, GrubFile>): GrubWorld {
  return {
    partitions: [
      { label: 'COS_GRUB', files: new Map() },
      { label: 'COS_OEM', files: oem },
      { label: 'COS_STATE', files: state },
      { label: 'COS_RECOVERY', files: recovery },
      { label: 'COS_PERSISTENT', files: new Map() },
    ],
  };
}

/** The env block at `path` on the partition labelled `label` (undefined: no such file). */
export function envOf(world: GrubWorld, label: string, path: string): Map<string, string> | undefined {
  const f = world.partitions.find((p) => p.label === label)?.files.get(path);
  return f !== undefined && 'env' in f ? f.env : undefined;
}
