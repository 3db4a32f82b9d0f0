/**
 * The in-process live-update bus: routes publish what changed (a machine, an offer, an
 * inventory, progress, a status, a new audit event); the SSE endpoint fans it out to whoever
 * listens. Publishing never waits for a listener, and costs nothing when nobody listens.
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
      resumes?: number;
      message?: string;
    }
  | { type: 'status'; mac: string; status: 'done' | 'failed'; reason?: string }
  | { type: 'event'; id: number; kind: string; summary: string; subject_id: string | null };

export type Listener = (message: LiveMessage) => void;

export class LiveBus {
  private readonly listeners = new Set<Listener>();

  get size(): number {
    return this.listeners.size;
  }

  publish(message: LiveMessage): void {
    for (const listener of this.listeners) {
      try {
        listener(message);
      } catch {
        // A listener that throws is dropped; it never breaks the publisher.
        this.listeners.delete(listener);
      }
    }
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
