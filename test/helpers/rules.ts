/**
 * Rules the data path tests seed sessions and flows for: `irc` (TCP 113
 * opened by a trigger to 6667) and `game` (UDP 27000 -> LAN port 28000,
 * opened by a trigger to 27015), both peer mode any, 10 min idle timeout.
 */
import type { Rule } from '../../src/config/types.js';

export const IRC_AND_GAME: Rule[] = [
  { name: 'irc', enabled: true, trigger: { protos: ['tcp'], ranges: [{ from: 6667, to: 6667 }] },
    open: [{ protos: ['tcp'], from: 113, to: 113, lanFrom: 113 }],
    idleTimeoutMs: 600_000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false },
  { name: 'game', enabled: true, trigger: { protos: ['udp'], ranges: [{ from: 27015, to: 27015 }] },
    open: [{ protos: ['udp'], from: 27000, to: 27000, lanFrom: 28000 }],
    idleTimeoutMs: 600_000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false },
];
