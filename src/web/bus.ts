/**
 * The in-process live-update bus: routes publish what changed (a machine, an offer, an
 * inventory, progress, a status, a new audit event); the SSE endpoint fans it out to whoever
 * listens. Publishing never waits for a listener, and costs nothing when nobody listens.
 *
 * Closing the bus (at shutdown) tells every subscriber it is over, so open SSE streams end
 * instead of holding the server open; a subscription made after that is told at once.
 */
export type LiveMessage =
  | { type: 'machine'; mac: string; change: string }
  | { type: 'offer'; mac: string; offer_kind: string }
  | { type: 'inventory'; mac: string; disks: number }
  | {
      type: 'progress';
      mac: string;
      phase: string;
      bytes_done: number;
      bytes_total: number | null;
      rate_bps: number;
      eta_seconds?: number | null;
      resumes?: number;
      message?: string;
    }
  | { type: 'status'; mac: string; status: 'done' | 'failed'; reason?: string }
  | { type: 'event'; id: number; kind: string; summary: string; subject_id: string | null }
  /** Audit events acknowledged (or un-acknowledged) by an operator. */
  | { type: 'ack'; ids: number[]; acknowledged: boolean }
  /** A netboot release fetch changed state or made progress (throttled). */
  | { type: 'netboot-fetch'; tag: string; status: string }
  /** An artifact-cache download changed state or made progress (throttled); `ref` when known. */
  | { type: 'cache'; url: string; ref: string | null; status: string };

export type LiveMessageType = LiveMessage['type'];

export type Listener = (message: LiveMessage) => void;

/** The `event` message announcing an audit event stored under `id`. */
export function auditMessage(
  id: number,
  event: { kind: string; summary: string; subject_id?: string | null },
): LiveMessage {
  return {
    type: 'event',
    id,
    kind: event.kind,
    summary: event.summary,
    subject_id: event.subject_id ?? null,
  };
}

/** How the SSE streams fed by this bus treat their clients. */
export interface StreamLimits {
  /** A comment line every this many milliseconds keeps idle connections (and proxies) alive. */
  heartbeatMs: number;
  /** Messages a client may have waiting while its socket is full; one more drops it. */
  maxQueued: number;
  /** Bytes a client's socket may hold unsent; past this it is dropped. */
  maxBufferedBytes: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  heartbeatMs: 15_000,
  maxQueued: 256,
  maxBufferedBytes: 1 << 20,
};

export class LiveBus {
  readonly limits: StreamLimits;
  private readonly listeners = new Map<Listener, (() => void) | undefined>();
  private closed = false;

  constructor(limits: Partial<StreamLimits> = {}) {
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...limits };
  }

  get size(): number {
    return this.listeners.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  publish(message: LiveMessage): void {
    for (const listener of this.listeners.keys()) {
      try {
        listener(message);
      } catch {
        // A listener that throws is dropped; it never breaks the publisher.
        this.listeners.delete(listener);
      }
    }
  }

  /**
   * Adds a listener; `onClose` runs once when the bus closes (at once if it already has).
   * Returns the unsubscribe function.
   */
  subscribe(listener: Listener, onClose?: () => void): () => void {
    if (this.closed) {
      onClose?.();
      return () => {};
    }
    this.listeners.set(listener, onClose);
    return () => this.listeners.delete(listener);
  }

  /** Ends the bus: every subscriber's `onClose` runs, and later publishes go nowhere. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const closers = [...this.listeners.values()];
    this.listeners.clear();
    for (const onClose of closers) {
      try {
        onClose?.();
      } catch {
        // One subscriber failing to close must not keep the others open.
      }
    }
  }
}
