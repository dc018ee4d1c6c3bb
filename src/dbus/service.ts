/**
 * The D-Bus adapter of cosd: exports io.costoolkit.Agent1 at /io/costoolkit/Agent1 and translates. Calls become
 * AgentPort calls (options through the codec), AgentError codes become D-Bus error names (errors.ts), the daemon's
 * state changes become PropertiesChanged, job completions the Completed signal. It decides nothing, except who may
 * call: state-changing methods are for uid 0 (the caller's credentials from the bus), or, where the host runs polkit,
 * for callers polkit authorizes for the method's action (polkit.ts; out of the box that is nobody but root, and the
 * shipped bus policy lets only root send them unless the polkit drop-in is installed).
 *
 * dbus-next builds the introspection data and answers Properties.Get/GetAll from the member table below; method calls
 * of this interface are dispatched here (rather than by dbus-next) because the authorization check needs the sender.
 * An a{sv} argument is decoded from its wire entries (wire.ts), and every error message sent is escaped and bounded.
 */
import dbus from 'dbus-next';
import { AgentError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';
import type { Logger } from '../sys/log.ts';
import type { AgentPort, DaemonState } from '../daemon/daemon.ts';
import {
  BUS_NAME,
  decodeCheckOptions,
  decodeRollbackOptions,
  decodeRunStageOptions,
  decodeStageName,
  decodeUpgradeOptions,
  encodeProperty,
  INTERFACE_NAME,
  OBJECT_PATH,
  PROPERTY_OF_STATE,
  PROPERTY_SIGNATURES,
  wireDict,
  type MakeVariant,
  type PropertyName,
} from './codec.ts';
import { dbusErrorName } from './errors.ts';
import { checkAuthorization, POLKIT_ACTIONS } from './polkit.ts';
import { wireHookInstalled, wireOptions } from './wire.ts';

type Message = dbus.Message;

const mkVariant: MakeVariant = (signature, value) => new dbus.Variant(signature, value);

/** One method: its in/out signatures, whether it needs uid 0, and what it does. */
interface MethodSpec {
  in: string;
  out: string;
  /** State-changing: only uid 0 may call it, or a caller polkit authorizes (POLKIT_ACTIONS). */
  privileged: boolean;
  call(agent: AgentPort, args: unknown[]): Promise<unknown[]>;
}

const METHODS: Readonly<Record<string, MethodSpec>> = {
  Upgrade: { in: 'a{sv}', out: 's', privileged: true, call: async (a, [o]) => [await a.upgrade(decodeUpgradeOptions(o))] },
  Check: { in: 'a{sv}', out: 's', privileged: true, call: async (a, [o]) => [await a.check(decodeCheckOptions(o))] },
  Rollback: { in: 'a{sv}', out: 's', privileged: true, call: async (a, [o]) => [await a.rollback(decodeRollbackOptions(o))] },
  Cancel: { in: '', out: 'b', privileged: true, call: (a) => Promise.resolve([a.cancel()]) },
  MarkGood: { in: '', out: 's', privileged: true, call: async (a) => [await a.mark(true)] },
  MarkBad: { in: '', out: 's', privileged: true, call: async (a) => [await a.mark(false)] },
  GetStatus: { in: '', out: 's', privileged: false, call: async (a) => [await a.statusJson()] },
  RunStage: { in: 'sa{sv}', out: 's', privileged: true, call: async (a, [stage, o]) => [await a.runStage({ stage: decodeStageName(stage), ...decodeRunStageOptions(o) })] },
};

const PROPERTY_NAMES = Object.keys(PROPERTY_SIGNATURES) as PropertyName[];

/** The exported interface object: dbus-next reads its getters for Get/GetAll and its member table for Introspect. */
class AgentInterface extends dbus.interface.Interface {
  readonly agent: AgentPort;
  constructor(agent: AgentPort) {
    super(INTERFACE_NAME);
    this.agent = agent;
  }
  private prop(name: PropertyName): unknown {
    return encodeProperty(name, this.agent.state, mkVariant);
  }
  get Operation(): unknown { return this.prop('Operation'); }
  get Progress(): unknown { return this.prop('Progress'); }
  get LastError(): unknown { return this.prop('LastError'); }
  get BootedSlot(): unknown { return this.prop('BootedSlot'); }
  get Slots(): unknown { return this.prop('Slots'); }
  get UpdateAvailable(): unknown { return this.prop('UpdateAvailable'); }
  get Transaction(): unknown { return this.prop('Transaction'); }
  get Config(): unknown { return this.prop('Config'); }
  get UpgradeFailure(): unknown { return this.prop('UpgradeFailure'); }
  get LastTransaction(): unknown { return this.prop('LastTransaction'); }
  /** The signal's body; dbus-next's configured wrapper sends it. */
  Completed(transaction: string, result: number, error: string): unknown[] {
    return [transaction, result, error];
  }
}

AgentInterface.configureMembers({
  properties: Object.fromEntries(PROPERTY_NAMES.map((name) => [name, { signature: PROPERTY_SIGNATURES[name], access: 'read' as const }])),
  // Declared for the introspection data only: calls are dispatched by AgentService.handle (it needs the sender).
  methods: Object.fromEntries(Object.entries(METHODS).map(([name, m]) => [name, { inSignature: m.in, outSignature: m.out }])),
  signals: { Completed: { signature: 'sis' } },
});

export interface ServiceOptions {
  log: Logger;
  /** Told about every method call that reaches cosd (any interface, Properties and Introspect too), by sender. */
  onCall?: (sender: string | undefined) => void;
  /** Subscribe to the daemon's state changes and completions; returns the unsubscribe function. */
  subscribe(listener: {
    changed(changes: Partial<DaemonState>): void;
    completed(transaction: string, result: number, error: string): void;
  }): () => void;
}

export class AgentService {
  private readonly bus: dbus.MessageBus;
  private readonly agent: AgentPort;
  private readonly log: Logger;
  private readonly iface: AgentInterface;
  private readonly handler: (msg: Message) => boolean;
  private readonly activity: ((msg: Message) => boolean) | undefined;
  private readonly unsubscribe: () => void;

  /** Export the interface on `bus` (the caller requests the bus name afterwards). */
  constructor(bus: dbus.MessageBus, agent: AgentPort, opts: ServiceOptions) {
    this.bus = bus;
    this.agent = agent;
    this.log = opts.log;
    this.iface = new AgentInterface(agent);
    if (!wireHookInstalled) this.log.warn({}, 'dbus-next internals changed: a{sv} options are read from its objects (a repeated key goes unnoticed)');
    this.handler = (msg) => this.handle(msg);
    const onCall = opts.onCall;
    // First, and never claiming the call: every call counts as activity, whoever answers it.
    this.activity = onCall !== undefined ? (msg) => {
      onCall(msg.sender ?? undefined);
      return false;
    } : undefined;
    if (this.activity !== undefined) bus.addMethodHandler(this.activity);
    bus.addMethodHandler(this.handler);
    bus.export(OBJECT_PATH, this.iface);
    this.unsubscribe = opts.subscribe({
      changed: (changes) => this.propertiesChanged(changes),
      completed: (tx, result, error) => this.iface.Completed(tx, result, error),
    });
  }

  /** Stop answering and announcing (the interface is unexported). */
  close(): void {
    this.unsubscribe();
    if (this.activity !== undefined) this.bus.removeMethodHandler(this.activity);
    this.bus.removeMethodHandler(this.handler);
    this.bus.unexport(OBJECT_PATH, this.iface);
  }

  private propertiesChanged(changes: Partial<DaemonState>): void {
    const changed: Record<string, unknown> = {};
    for (const key of Object.keys(changes) as Array<keyof DaemonState>) {
      const name = PROPERTY_OF_STATE[key];
      changed[name] = encodeProperty(name, this.agent.state, mkVariant);
    }
    dbus.interface.Interface.emitPropertiesChanged(this.iface, changed, []);
  }

  /** dbus-next method handler: true when the call is ours (answered asynchronously). */
  private handle(msg: Message): boolean {
    if (msg.path !== OBJECT_PATH) return false;
    // A call may omit the interface; then a member of ours is ours.
    if (msg.interface ? msg.interface !== INTERFACE_NAME : METHODS[msg.member] === undefined) return false;
    const spec = Object.hasOwn(METHODS, msg.member) ? METHODS[msg.member] : undefined;
    if (spec === undefined) {
      this.bus.send(dbus.Message.newError(msg as never, 'org.freedesktop.DBus.Error.UnknownMethod', `${INTERFACE_NAME} has no method ${msg.member}`));
      return true;
    }
    if ((msg.signature ?? '') !== spec.in) {
      this.bus.send(dbus.Message.newError(msg as never, dbusErrorName('USAGE'),
        `${msg.member} takes (${spec.in}), got (${msg.signature ?? ''})`));
      return true;
    }
    // An a{sv} is read from its wire entries (now: they are only there while this message is dispatched), not from
    // dbus-next's object, which lost a "__proto__" key and all but the last of a repeated key.
    const wire = spec.in === 'a{sv}' ? wireOptions(msg) : undefined;
    void this.dispatch(msg, spec, wire !== undefined ? [wireDict(wire)] : (msg.body ?? []));
    return true;
  }

  private async dispatch(msg: Message, spec: MethodSpec, args: unknown[]): Promise<void> {
    try {
      if (spec.privileged) await this.authorize(msg);
      const body = await spec.call(this.agent, args);
      this.bus.send(dbus.Message.newMethodReturn(msg, spec.out, body));
    } catch (e) {
      const err = e instanceof AgentError ? e : new AgentError('STAGE_FAILED', e instanceof Error ? e.message : String(e), { cause: e });
      if (!(e instanceof AgentError)) this.log.error({ method: msg.member, err: displayText(e instanceof Error ? (e.stack ?? e.message) : String(e), TEXT_LIMITS.message) }, 'method failed unexpectedly');
      // Whatever the message echoes (a caller's value, a config file's bytes) goes out escaped and bounded.
      this.bus.send(dbus.Message.newError(msg as never, dbusErrorName(err.code), displayText(err.message, TEXT_LIMITS.message)));
    }
  }

  /** State-changing methods: root (the caller's uid from the bus), else whoever polkit authorizes where it runs. */
  private async authorize(msg: Message): Promise<void> {
    const reply = await this.bus.call(new dbus.Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'GetConnectionUnixUser',
      signature: 's',
      body: [msg.sender],
    }));
    const uid = Number(reply?.body[0]);
    if (uid === 0) {
      this.log.info({ method: msg.member, sender: msg.sender, uid }, 'call');
      return;
    }
    const action = POLKIT_ACTIONS[msg.member] ?? 'io.costoolkit.agent1.upgrade';
    const answer = await checkAuthorization(this.bus, msg, action).catch((e: unknown) => {
      // polkit runs but failed to answer: refuse (fail closed), and say why.
      this.log.error({ method: msg.member, sender: msg.sender, uid, action, err: e instanceof Error ? e.message : String(e) }, 'polkit did not answer');
      throw new AgentError('ACCESS_DENIED', `${msg.member}: the caller ${msg.sender} runs as uid ${uid} and polkit could not be asked about ${action}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
    if (answer.kind === 'authorized') {
      this.log.info({ method: msg.member, sender: msg.sender, uid, action }, 'call authorized by polkit');
      return;
    }
    this.log.warn({ method: msg.member, sender: msg.sender, uid, action, polkit: answer.kind === 'absent' ? 'absent' : answer.challenge ? 'challenge' : 'no' }, 'refused a call from a non-root caller');
    throw new AgentError('ACCESS_DENIED', answer.kind === 'absent'
      ? `${msg.member} is for root only (the caller ${msg.sender} runs as uid ${uid})`
      : `${msg.member} is for root, or for callers polkit authorizes for ${action}; polkit ${answer.challenge ? 'requires an administrator to authenticate, which cosctl cannot offer (run it as root)' : 'said no'} (the caller ${msg.sender} runs as uid ${uid})`);
  }
}

export interface StartOptions extends ServiceOptions {
  /** Bus address; default DBUS_SYSTEM_BUS_ADDRESS, else the system bus socket. */
  address?: string;
  /** Called once if the bus connection is lost (the daemon should exit so systemd restarts it). */
  onDisconnect(err: Error): void;
}

export interface RunningService {
  /** The connection's unique name (":1.42"). */
  readonly uniqueName: string;
  /** Release the bus name, unexport, disconnect. */
  stop(): Promise<void>;
  /**
   * Give up the bus name and keep the connection (an idle daemon leaving: calls already routed to it are still
   * answered, the next ones activate a new cosd). Resolves false when the bus did not answer.
   */
  releaseName(): Promise<boolean>;
  /** Take the bus name again (without queueing); false when another cosd holds it now. */
  requestName(): Promise<boolean>;
  /** Which of these unique names are still on the bus. */
  alive(names: readonly string[]): Promise<string[]>;
}

/**
 * Connect to the system bus, export the interface and take the bus name io.costoolkit.Agent1 (never queueing:
 * a second cosd on the same bus fails to start, naming the name).
 */
export async function startService(agent: AgentPort, opts: StartOptions): Promise<RunningService> {
  const address = opts.address ?? process.env.DBUS_SYSTEM_BUS_ADDRESS ?? 'unix:path=/run/dbus/system_bus_socket';
  const bus = dbus.sessionBus({ busAddress: address, authMethods: ['EXTERNAL'] });
  let stopping = false;
  let lost = false;
  const disconnected = (err: Error): void => {
    if (stopping || lost) return;
    lost = true;
    opts.onDisconnect(err);
  };
  await new Promise<void>((resolve, reject) => {
    bus.once('connect', () => resolve());
    bus.once('error', (e: unknown) => reject(new AgentError('NOT_SUPPORTED', `cannot connect to the system bus at ${address}: ${e instanceof Error ? e.message : String(e)}`, { cause: e })));
  });
  bus.on('error', (e: unknown) => disconnected(e instanceof Error ? e : new Error(String(e))));
  // dbus-next does not forward the end of the stream; its connection object does (a private field).
  (bus as unknown as { _connection?: NodeJS.EventEmitter })._connection?.on('end', () => disconnected(new Error(`the bus at ${address} closed the connection`)));

  const service = new AgentService(bus, agent, opts);
  const reply = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) {
    service.close();
    stopping = true;
    bus.disconnect();
    throw new AgentError('BUSY', `the bus name ${BUS_NAME} is already owned on ${address} (another cosd is running)`);
  }
  const uniqueName = (bus as unknown as { name: string }).name;
  opts.log.info({ busName: BUS_NAME, uniqueName, address }, 'on the bus');
  let released = false;
  const hasOwner = async (name: string): Promise<boolean> => {
    const reply = await bus.call(new dbus.Message({
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus',
      member: 'NameHasOwner', signature: 's', body: [name],
    }));
    return reply?.body[0] === true;
  };
  return {
    uniqueName,
    releaseName: async () => {
      if (lost || stopping) return false;
      const ok = await bus.releaseName(BUS_NAME).then(() => true, () => false);
      released ||= ok;
      return ok;
    },
    requestName: async () => {
      if (lost || stopping) return false;
      const r = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE).catch(() => undefined);
      const ok = r === dbus.RequestNameReply.PRIMARY_OWNER || r === dbus.RequestNameReply.ALREADY_OWNER;
      if (ok) released = false;
      return ok;
    },
    alive: async (names) => {
      const out: string[] = [];
      for (const n of names) if (await hasOwner(n)) out.push(n);
      return out;
    },
    stop: async () => {
      if (stopping) return;
      stopping = true;
      // A lost connection would never answer: release only over a live one.
      if (!lost && !released) await bus.releaseName(BUS_NAME).catch(() => undefined);
      service.close();
      try {
        bus.disconnect();
      } catch {
        // already closed
      }
    },
  };
}
