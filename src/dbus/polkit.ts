/**
 * polkit, where the host runs it: org.freedesktop.PolicyKit1.Authority.CheckAuthorization for a bus caller. cosd asks
 * it only for callers that are not root (root may always call; polkit authorizes uid 0 for everything anyway).
 *
 * The action ids are in packaging/io.costoolkit.agent1.policy (defaults: auth_admin_keep for an active local session,
 * no otherwise), so out of the box only root gets in; an admin delegates with a polkit rule.
 */
import dbus from 'dbus-next';

/** The polkit action of each state-changing method. */
export const POLKIT_ACTIONS: Readonly<Record<string, string>> = {
  Upgrade: 'io.costoolkit.agent1.upgrade',
  Cancel: 'io.costoolkit.agent1.upgrade',
  Check: 'io.costoolkit.agent1.check',
  Rollback: 'io.costoolkit.agent1.rollback',
  MarkGood: 'io.costoolkit.agent1.mark',
  MarkBad: 'io.costoolkit.agent1.mark',
  RunStage: 'io.costoolkit.agent1.run-stage',
};

export type PolkitAnswer =
  /** polkit does not run on this bus (and cannot be activated). */
  | { kind: 'absent' }
  | { kind: 'authorized' }
  /** Not authorized; `challenge`: it would be with authentication (which needs an agent the caller did not offer). */
  | { kind: 'denied'; challenge: boolean };

/** D-Bus header flag ALLOW_INTERACTIVE_AUTHORIZATION (the caller can answer an authentication dialog). */
const ALLOW_INTERACTIVE = 0x4;
/** CheckAuthorization flag AllowUserInteraction. */
const USER_INTERACTION = 0x1;
const ABSENT = new Set(['org.freedesktop.DBus.Error.ServiceUnknown', 'org.freedesktop.DBus.Error.NameHasNoOwner']);

export async function checkAuthorization(bus: dbus.MessageBus, caller: dbus.Message, actionId: string): Promise<PolkitAnswer> {
  let reply: dbus.Message | null;
  try {
    reply = await bus.call(new dbus.Message({
      destination: 'org.freedesktop.PolicyKit1',
      path: '/org/freedesktop/PolicyKit1/Authority',
      interface: 'org.freedesktop.PolicyKit1.Authority',
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [
        ['system-bus-name', { name: new dbus.Variant('s', caller.sender) }],
        actionId,
        {},
        (caller.flags & ALLOW_INTERACTIVE) !== 0 ? USER_INTERACTION : 0,
        '',
      ],
    }));
  } catch (e) {
    if (e instanceof dbus.DBusError && ABSENT.has(e.type)) return { kind: 'absent' };
    throw e;
  }
  const [authorized, challenge] = (reply?.body[0] ?? []) as [boolean?, boolean?];
  return authorized === true ? { kind: 'authorized' } : { kind: 'denied', challenge: challenge === true };
}
