/**
 * Forwards the engine's progress events to the server about once a second. A phase change is
 * always sent (the server's record would otherwise show a stale phase), reports go out one at a
 * time in order, and a report that is still waiting is replaced by a newer one of the same
 * phase, so a slow server never builds up a backlog. Failures are reported once and otherwise
 * ignored: progress is advisory and must never stop a flash. A 404 or 405 means the server has
 * no progress route at all (upstream bty-web): reporting then stops for the rest of the flash.
 */
import type { FlashProgress } from '../core/progress.ts';

export const PROGRESS_INTERVAL_MS = 1000;

export interface ProgressReporterOptions {
  intervalMs?: number;
  now?: () => number;
  /** Called for the first failed report only (a warning for the operator). */
  onFirstFailure?: (why: string) => void;
}

export class ProgressReporter {
  private readonly send: (event: FlashProgress) => Promise<number>;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly onFirstFailure: (why: string) => void;
  private readonly waiting: FlashProgress[] = [];
  private pump: Promise<void> | null = null;
  private lastPhase: string | null = null;
  private lastSentAt = -Infinity;
  private failed = false;
  /** The server has no progress route: nothing more is sent. */
  stopped = false;
  /** Reports the server accepted (2xx). */
  delivered = 0;

  constructor(
    send: (event: FlashProgress) => Promise<number>,
    options: ProgressReporterOptions = {},
  ) {
    this.send = send;
    this.intervalMs = options.intervalMs ?? PROGRESS_INTERVAL_MS;
    this.now = options.now ?? (() => performance.now());
    this.onFirstFailure = options.onFirstFailure ?? (() => undefined);
  }

  /** Takes every engine event; sends the ones due. Never throws, never waits. */
  report(event: FlashProgress): void {
    if (this.stopped) return;
    const at = this.now();
    const phaseChanged = event.phase !== this.lastPhase;
    if (!phaseChanged && at - this.lastSentAt < this.intervalMs) return;
    this.lastPhase = event.phase;
    this.lastSentAt = at;
    const last = this.waiting[this.waiting.length - 1];
    if (last !== undefined && last.phase === event.phase) {
      this.waiting[this.waiting.length - 1] = event;
    } else {
      this.waiting.push(event);
    }
    this.pump ??= this.drain().finally(() => {
      this.pump = null;
    });
  }

  /** Resolves once every waiting report was sent (or failed). */
  async flush(): Promise<void> {
    while (this.pump !== null) await this.pump;
  }

  private async drain(): Promise<void> {
    for (let next = this.waiting.shift(); next !== undefined; next = this.waiting.shift()) {
      try {
        const status = await this.send(next);
        if (status >= 200 && status < 300) this.delivered++;
        else if (status === 404 || status === 405) {
          this.stopped = true;
          this.waiting.length = 0;
          this.fail(`the server answered HTTP ${status}: it takes no progress reports`);
        } else this.fail(`the server answered HTTP ${status}`);
      } catch (err) {
        this.fail(err instanceof Error ? err.message : String(err));
      }
    }
  }

  private fail(why: string): void {
    if (this.failed) return;
    this.failed = true;
    this.onFirstFailure(why);
  }
}
