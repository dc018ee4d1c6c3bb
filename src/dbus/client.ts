/**
 * The client side of io.costoolkit.Agent1, for cosctl (and tests): connects to the system bus at
 * DBUS_SYSTEM_BUS_ADDRESS (else /run/dbus/system_bus_socket), calls methods, reads properties, follows
 * PropertiesChanged and Completed. D-Bus errors come back as AgentErrors with the code of the same table the service
 * uses (errors.ts), so a caller handles a daemon failure exactly like an in-process one.
 *
 *   const agent = await connectAgent();          // null: no bus, or no cosd on it
 *   const rec = await agent.upgradeAndWait({ image: 'reg/os:v2' }, { onProgress: (p) => ... });
 *   await agent.close();
 */
import dbus from 'dbus-next';
import { AgentError } from '../model/errors.ts';
import type { HostStatusDocument } from '../model/host.ts';
import type { Operation, Progress } from '../host/deps.ts';
import type { CheckRequest, RollbackRequest, UpgradeRequest } from '../daemon/daemon.ts';
import type { TransactionRecord } from '../daemon/transactions.ts';
import {
  BUS_NAME,
  decodeProperties,
  decodeProperty,
  encodeCheckOptions,
  encodeRollbackOptions,
  encodeRunStageOptions,
  encodeUpgradeOptions,
  INTERFACE_NAME,
  OBJECT_PATH,
  type AgentProperties,
  type MakeVariant,
  type PropertyName,
} from './codec.ts';
import { errorCodeOf, isErrorCode } from './errors.ts';

const mkVariant: MakeVariant = (signature, value) => new dbus.Variant(signature, value);
const DEFAULT_ADDRESS = 'unix:path=/run/dbus/system_bus_socket';
const SIGNAL = 4; // dbus-next MessageType.SIGNAL

export interface ClientOptions {
  /** Bus address; default DBUS_SYSTEM_BUS_ADDRESS from `env`, else the system bus socket. */
  address?: string;
  /** Environment to read DBUS_SYSTEM_BUS_ADDRESS from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** A Completed signal. */
export interface Completion {
  transaction: string;
  /** 0 success, 1 failure, 2 cancelled. */
  result: number;
  /** '' on success. */
  error: string;
}

export interface AgentEvents {
  /** PropertiesChanged: the changed properties, typed. */
  changed?(changes: Partial<AgentProperties>): void;
  completed?(c: Completion): void;
}

export interface WaitOptions {
  /** Progress of the job: one call per Operation or Progress change (Operation folded into `operation`). */
  onProgress?(p: Progress): void;
  /** When it aborts (cosctl's Ctrl-C), the job is asked to Cancel and still waited for: its cleanup is reported. */
  signal?: AbortSignal;
}

/** A D-Bus error name neither the agent nor the bus defines (a daemon bug): not an AgentError, so exit code 1. */
export class UnknownDbusError extends Error {
  override name = 'UnknownDbusError';
  readonly dbusName: string;
  constructor(dbusName: string, text: string) {
    super(`${dbusName}: ${text}`);
    this.dbusName = dbusName;
  }
}

function busAddress(opts: ClientOptions): string {
  return opts.address ?? (opts.env ?? process.env).DBUS_SYSTEM_BUS_ADDRESS ?? DEFAULT_ADDRESS;
}

/** A D-Bus error as an AgentError of the same table (or UnknownDbusError). Other errors pass through. */
export function fromDbusError(e: unknown): Error {
  if (e instanceof dbus.DBusError) {
    const code = errorCodeOf(e.type);
    return code !== undefined ? new AgentError(code, e.text, { cause: e }) : new UnknownDbusError(e.type, e.text);
  }
  return e instanceof Error ? e : new Error(String(e));
}

/**
 * Connect to the bus, or null when there is no bus at the address or no cosd owns io.costoolkit.Agent1 on it
 * (cosctl then runs the action in-process).
 */
export async function connectAgent(opts: ClientOptions = {}): Promise<AgentClient | null> {
  let client: AgentClient;
  try {
    client = await AgentClient.connect(opts);
  } catch {
    return null;
  }
  if ((await client.daemonRunning().catch(() => false)) || (await client.daemonActivatable().catch(() => false))) return client;
  await client.close();
  return null;
}

export class AgentClient {
  private readonly bus: dbus.MessageBus;
  /** The address connected to. */
  readonly address: string;
  private closed = false;

  private constructor(bus: dbus.MessageBus, address: string) {
    this.bus = bus;
    this.address = address;
  }

  /** Connect to the bus (not to cosd: see daemonRunning). Throws NOT_SUPPORTED naming the address when unreachable. */
  static async connect(opts: ClientOptions = {}): Promise<AgentClient> {
    const address = busAddress(opts);
    const bus = dbus.sessionBus({ busAddress: address, authMethods: ['EXTERNAL'] });
    try {
      await new Promise<void>((resolve, reject) => {
        bus.on('connect', () => resolve());
        bus.on('error', reject);
      });
    } catch (e) {
      try {
        bus.disconnect();
      } catch {
        // the stream never opened
      }
      throw new AgentError('NOT_SUPPORTED', `cannot connect to the system bus at ${address}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    bus.on('error', () => {}); // a lost connection fails the pending calls; do not crash on the event
    return new AgentClient(bus, address);
  }

  /** Whether cosd owns its name on this bus. */
  async daemonRunning(): Promise<boolean> {
    const reply = await this.callBus('NameHasOwner', 's', [BUS_NAME]);
    return reply[0] === true;
  }

  /** Whether the bus can start cosd on the first call (packaging/io.costoolkit.Agent1.service installed). */
  async daemonActivatable(): Promise<boolean> {
    const reply = await this.callBus('ListActivatableNames', '', []);
    return Array.isArray(reply[0]) && (reply[0] as unknown[]).includes(BUS_NAME);
  }

  /** Call a method of io.costoolkit.Agent1 with a raw body (options as dbus-next Variants). Errors as AgentErrors. */
  async call(member: string, signature = '', body: unknown[] = []): Promise<unknown[]> {
    try {
      const reply = await this.bus.call(new dbus.Message({ destination: BUS_NAME, path: OBJECT_PATH, interface: INTERFACE_NAME, member, signature, body }));
      return reply?.body ?? [];
    } catch (e) {
      // The bus policy's refusal comes as dbus-daemon's rule dump: say what it means, keep the dump as the cause.
      if (e instanceof dbus.DBusError && e.type === 'org.freedesktop.DBus.Error.AccessDenied') {
        throw new AgentError('ACCESS_DENIED', `${member} changes the system and is for root only: the bus policy refused the call (run cosctl as root)`, { cause: e });
      }
      throw fromDbusError(e);
    }
  }

  /** The same, for the raw a{sv} options of Upgrade/Check/Rollback given as [signature, value] pairs (tests). */
  callWithOptions(member: 'Upgrade' | 'Check' | 'Rollback', options: Record<string, [string, unknown]>): Promise<unknown[]> {
    const dict = Object.fromEntries(Object.entries(options).map(([k, [sig, v]]) => [k, mkVariant(sig, v)]));
    return this.call(member, 'a{sv}', [dict]);
  }

  async upgrade(req: UpgradeRequest = {}): Promise<string> {
    return String((await this.call('Upgrade', 'a{sv}', [encodeUpgradeOptions(req, mkVariant)]))[0]);
  }

  async check(req: CheckRequest = {}): Promise<string> {
    return String((await this.call('Check', 'a{sv}', [encodeCheckOptions(req, mkVariant)]))[0]);
  }

  async rollback(req: RollbackRequest = {}): Promise<string> {
    return String((await this.call('Rollback', 'a{sv}', [encodeRollbackOptions(req, mkVariant)]))[0]);
  }

  /** true when a running upgrade was told to stop; false when there is none or it is past the slot switch. */
  async cancel(): Promise<boolean> {
    return (await this.call('Cancel'))[0] === true;
  }

  async markGood(): Promise<string> {
    return String((await this.call('MarkGood'))[0]);
  }

  async markBad(): Promise<string> {
    return String((await this.call('MarkBad'))[0]);
  }

  /** The status document's JSON text, exactly as the daemon sent it. */
  async getStatusText(): Promise<string> {
    return String((await this.call('GetStatus'))[0]);
  }

  async getStatus(): Promise<HostStatusDocument> {
    return JSON.parse(await this.getStatusText()) as HostStatusDocument;
  }

  /** Start a yip stage as a job; resolves with its transaction id (the outcome comes with Completed). */
  async runStage(stage: string, opts: { strict?: boolean } = {}): Promise<string> {
    return String((await this.call('RunStage', 'sa{sv}', [stage, encodeRunStageOptions(opts, mkVariant)]))[0]);
  }

  async getProperty<K extends PropertyName>(name: K): Promise<AgentProperties[K]> {
    const [value] = await this.callProps('Get', 'ss', [INTERFACE_NAME, name]);
    return decodeProperty(name, value);
  }

  async getProperties(): Promise<AgentProperties> {
    const [dict] = await this.callProps('GetAll', 's', [INTERFACE_NAME]);
    return decodeProperties(dict as Record<string, unknown>) as AgentProperties;
  }

  /** The service's own introspection XML. */
  async introspect(): Promise<string> {
    try {
      const reply = await this.bus.call(new dbus.Message({ destination: BUS_NAME, path: OBJECT_PATH, interface: 'org.freedesktop.DBus.Introspectable', member: 'Introspect' }));
      return String(reply?.body[0]);
    } catch (e) {
      throw fromDbusError(e);
    }
  }

  /**
   * Follow PropertiesChanged and Completed. Resolves once the bus has the match rules (no signal after that is
   * missed); the returned function unsubscribes.
   */
  async subscribe(events: AgentEvents): Promise<() => Promise<void>> {
    const rules = [
      `type='signal',sender='${BUS_NAME}',path='${OBJECT_PATH}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='${INTERFACE_NAME}'`,
      `type='signal',sender='${BUS_NAME}',path='${OBJECT_PATH}',interface='${INTERFACE_NAME}',member='Completed'`,
    ];
    const onMessage = (msg: dbus.Message): void => {
      if (msg.type !== SIGNAL || msg.path !== OBJECT_PATH) return;
      if (msg.interface === 'org.freedesktop.DBus.Properties' && msg.member === 'PropertiesChanged' && msg.body[0] === INTERFACE_NAME) {
        events.changed?.(decodeProperties(msg.body[1] as Record<string, unknown>));
      } else if (msg.interface === INTERFACE_NAME && msg.member === 'Completed') {
        const [transaction, result, error] = msg.body as [string, number, string];
        events.completed?.({ transaction, result, error });
      }
    };
    this.bus.on('message', onMessage);
    try {
      for (const rule of rules) await this.callBus('AddMatch', 's', [rule]);
    } catch (e) {
      this.bus.removeListener('message', onMessage);
      throw e;
    }
    return async () => {
      this.bus.removeListener('message', onMessage);
      if (this.closed) return;
      for (const rule of rules) await this.callBus('RemoveMatch', 's', [rule]).catch(() => undefined);
    };
  }

  /**
   * Start a job with `start` and wait for its Completed. Resolves with the job's record (LastTransaction); rejects
   * with an AgentError of the job's code when it failed or was cancelled.
   */
  async runJob(start: () => Promise<string>, opts: WaitOptions = {}): Promise<TransactionRecord> {
    let tx: string | null = null;
    /** The running transaction as last announced, so each change is attributed to its job. */
    let announced = '';
    let operation: Operation = 'idle';
    const backlog: Array<() => void> = [];
    const deliver = (fn: () => void): void => {
      if (tx === null) backlog.push(fn);
      else fn();
    };
    const records = new Map<string, TransactionRecord>();
    let settle: (c: Completion) => void = () => {};
    let lose: (e: AgentError) => void = () => {};
    const done = new Promise<Completion>((resolve, reject) => {
      settle = resolve;
      lose = reject;
    });
    done.catch(() => undefined); // a loss before the wait begins must not count as an unhandled rejection
    // cosd leaving the bus (a crash, a stop) or the bus connection dropping ends the wait: no Completed will come.
    const lostMessage = (why: string): string =>
      `${why} while transaction ${tx ?? '(starting)'} was running; its outcome shows in LastTransaction once cosd is back`;
    const ownerRule = `type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${BUS_NAME}'`;
    const onOwner = (msg: dbus.Message): void => {
      if (msg.type === SIGNAL && msg.member === 'NameOwnerChanged' && msg.body[0] === BUS_NAME && msg.body[2] === '') {
        lose(new AgentError('DAEMON_LOST', lostMessage('cosd left the bus (it crashed or was stopped)')));
      }
    };
    const onBusError = (e: unknown): void => {
      lose(new AgentError('DAEMON_LOST', lostMessage(`the bus connection was lost (${e instanceof Error ? e.message : String(e)})`)));
    };
    this.bus.on('message', onOwner);
    this.bus.on('error', onBusError);
    await this.callBus('AddMatch', 's', [ownerRule]);
    const onAbort = (): void => {
      void this.cancel().catch(() => false);
    };
    const unsubscribe = await this.subscribe({
      changed: (ch) => {
        if (ch.LastTransaction) records.set(ch.LastTransaction.transaction, ch.LastTransaction);
        if (ch.Transaction !== undefined) announced = ch.Transaction;
        const owner = announced;
        const { Operation: op, Progress: p } = ch;
        if (op === undefined && p === undefined) return;
        deliver(() => {
          if (owner !== tx) return;
          if (op !== undefined) operation = op;
          if (p === undefined || operation === 'idle') return;
          opts.onProgress?.({ operation, percent: p.percent, message: p.message, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal });
        });
      },
      completed: (c) => deliver(() => {
        if (c.transaction === tx) settle(c);
      }),
    });
    try {
      tx = await start();
      for (const fn of backlog.splice(0)) fn();
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
      const c = await done;
      const rec = records.get(c.transaction) ?? (await this.getProperty('LastTransaction'));
      if (rec === null || rec.transaction !== c.transaction) {
        throw new AgentError('STATE_INVALID', `transaction ${c.transaction} completed (result ${c.result}) but its record was replaced before it could be read`);
      }
      if (c.result !== 0) {
        const code = rec.code !== null && isErrorCode(rec.code) ? rec.code : 'STAGE_FAILED';
        throw new AgentError(code, c.error || rec.error || `transaction ${c.transaction} failed`);
      }
      return rec;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      this.bus.removeListener('message', onOwner);
      this.bus.removeListener('error', onBusError);
      if (!this.closed) await this.callBus('RemoveMatch', 's', [ownerRule]).catch(() => undefined);
      await unsubscribe();
    }
  }

  upgradeAndWait(req: UpgradeRequest = {}, opts: WaitOptions = {}): Promise<TransactionRecord> {
    return this.runJob(() => this.upgrade(req), opts);
  }

  checkAndWait(req: CheckRequest = {}): Promise<TransactionRecord> {
    return this.runJob(() => this.check(req));
  }

  rollbackAndWait(req: RollbackRequest = {}): Promise<TransactionRecord> {
    return this.runJob(() => this.rollback(req));
  }

  markAndWait(good: boolean): Promise<TransactionRecord> {
    return this.runJob(() => (good ? this.markGood() : this.markBad()));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.bus.disconnect();
  }

  private async callProps(member: string, signature: string, body: unknown[]): Promise<unknown[]> {
    try {
      const reply = await this.bus.call(new dbus.Message({ destination: BUS_NAME, path: OBJECT_PATH, interface: 'org.freedesktop.DBus.Properties', member, signature, body }));
      return reply?.body ?? [];
    } catch (e) {
      throw fromDbusError(e);
    }
  }

  private async callBus(member: string, signature: string, body: unknown[]): Promise<unknown[]> {
    try {
      const reply = await this.bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member, signature, body }));
      return reply?.body ?? [];
    } catch (e) {
      throw fromDbusError(e);
    }
  }
}
