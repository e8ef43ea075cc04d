/**
 * Close codes of /ws besides the standard ones (1001 on shutdown). 4000–4999 are the application's range (RFC 6455
 * §7.4.2); the last digits echo the HTTP status of the same refusal. docs/design.md "WebSocket /ws" lists them.
 */
export const WS_CLOSE = {
  /**
   * The client did not read: its answers waited SEND_STALL_MS for it to read down to half of PIXELAI_WS_MAX_BUFFERED_MB,
   * or its unread frames (or its own unhandled ones) passed that bound. Sending stops, the socket closes.
   */
  SLOW_CONSUMER: 4008,
  /** The client (IP) already has PIXELAI_WS_MAX_CONNECTIONS_PER_CLIENT connections open. */
  TOO_MANY_CONNECTIONS: 4029,
} as const;

/**
 * After a close frame, how long a peer gets to read up to it before the socket is dropped. A peer that never reads
 * would otherwise hold its unsent frames (and the socket) for ws's own 30 s closing timeout.
 */
export const CLOSE_GRACE_MS = 10_000;

/**
 * How long answers wait for a peer to read down to half the buffered bound. A reader on any working link drains
 * megabytes in far less; one that reads nothing for this long is not going to.
 */
export const SEND_STALL_MS = 10_000;

/**
 * Open connections per client: one peer must not take the API's memory or event loop from everyone else by opening
 * many. One count per address, dropped to nothing when its last connection closes.
 */
export class ClientConnections {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Counts one more connection of `client`; false (and nothing counted) when it already has `max`. */
  tryOpen(client: string): boolean {
    const n = this.counts.get(client) ?? 0;
    if (this.max > 0 && n >= this.max) return false;
    this.counts.set(client, n + 1);
    return true;
  }

  closed(client: string): void {
    const n = (this.counts.get(client) ?? 1) - 1;
    if (n <= 0) this.counts.delete(client);
    else this.counts.set(client, n);
  }

  message(): string {
    return `too many WebSocket connections from this client: the limit is ${this.max} (PIXELAI_WS_MAX_CONNECTIONS_PER_CLIENT); close one and reconnect`;
  }
}

export function tooManyWatchesMessage(max: number): string {
  return `this connection already follows ${max} jobs, the limit (PIXELAI_WS_MAX_WATCHES); wait for one to finish or open another connection`;
}
