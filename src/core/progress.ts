/**
 * The one progress vocabulary for a flash, shared by the CLI bar, `--json` output, the agent's
 * reports to bty-web (`POST /pxe/{mac}/progress`) and the browser UI.
 *
 * A streaming flash downloads, decompresses and writes at once; its phase is `write` and the
 * event carries both the target position (`bytes_done`) and the source position
 * (`source_bytes_done`), so a bar has a real percentage even when the decompressed size is
 * unknown. `download` is a separate phase only when bytes must land in a temp file first (qcow2
 * from a URL).
 */

export const FLASH_PHASES = [
  'resolve',
  'download',
  'write',
  'sync',
  'verify',
  'done',
  'failed',
] as const;
export type FlashPhase = (typeof FLASH_PHASES)[number];

export interface FlashProgress {
  phase: FlashPhase;
  /** Bytes of the phase's own work done (written bytes for `write`, read-back for `verify`). */
  bytes_done: number;
  /** Total for the phase, or null when unknown (e.g. a compressed image of unknown size). */
  bytes_total: number | null;
  /** Recent rate of `bytes_done`, bytes per second. */
  rate_bps: number;
  /** Seconds left for this phase, or null when it cannot be estimated. */
  eta_seconds: number | null;
  /** Source (wire or file) bytes consumed; the basis of the percentage for streamed images. */
  source_bytes_done?: number;
  source_bytes_total?: number | null;
  /** How many times an interrupted download was resumed so far. */
  resumes: number;
  message?: string;
}

export type ProgressListener = (event: FlashProgress) => void;

/** Fraction 0..1 of the phase done, from whichever total is known; null when none is. */
export function progressFraction(p: FlashProgress): number | null {
  if (p.phase === 'done') return 1;
  if (p.source_bytes_total && p.source_bytes_done !== undefined) {
    return Math.min(1, p.source_bytes_done / p.source_bytes_total);
  }
  if (p.bytes_total) return Math.min(1, p.bytes_done / p.bytes_total);
  return null;
}

/**
 * Tracks one phase's counters and turns them into throttled FlashProgress events with a rate
 * (averaged over a sliding window) and an ETA.
 */
export class PhaseMeter {
  private samples: Array<{ t: number; bytes: number; src: number }> = [];
  private lastEmit = 0;
  bytesDone = 0;
  sourceBytesDone = 0;

  readonly phase: FlashPhase;
  bytesTotal: number | null;
  sourceBytesTotal: number | null;
  private readonly emit: ProgressListener;
  private readonly intervalMs: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  /** Resumes so far, read from whoever counts them (the image source). */
  private readonly resumes: () => number;

  constructor(
    phase: FlashPhase,
    emit: ProgressListener,
    options: {
      bytesTotal?: number | null;
      sourceBytesTotal?: number | null;
      intervalMs?: number;
      windowMs?: number;
      now?: () => number;
      resumes?: () => number;
    } = {},
  ) {
    this.phase = phase;
    this.emit = emit;
    this.bytesTotal = options.bytesTotal ?? null;
    this.sourceBytesTotal = options.sourceBytesTotal ?? null;
    this.intervalMs = options.intervalMs ?? 250;
    this.windowMs = options.windowMs ?? 3000;
    this.now = options.now ?? (() => performance.now());
    this.resumes = options.resumes ?? (() => 0);
  }

  /** Records progress; emits at most once per interval unless `force`. */
  update(bytesDone: number, sourceBytesDone = this.sourceBytesDone, force = false): void {
    this.bytesDone = bytesDone;
    this.sourceBytesDone = sourceBytesDone;
    const t = this.now();
    if (!force && t - this.lastEmit < this.intervalMs) return;
    this.lastEmit = t;
    this.samples.push({ t, bytes: bytesDone, src: sourceBytesDone });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
    this.emit(this.snapshot());
  }

  /** The current state as an event, without throttling. */
  snapshot(message?: string): FlashProgress {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    let rate = 0;
    let srcRate = 0;
    if (first && last && last.t > first.t) {
      const dt = (last.t - first.t) / 1000;
      rate = (last.bytes - first.bytes) / dt;
      srcRate = (last.src - first.src) / dt;
    }
    let eta: number | null = null;
    if (this.sourceBytesTotal && srcRate > 0) {
      eta = Math.max(0, (this.sourceBytesTotal - this.sourceBytesDone) / srcRate);
    } else if (this.bytesTotal && rate > 0) {
      eta = Math.max(0, (this.bytesTotal - this.bytesDone) / rate);
    }
    const event: FlashProgress = {
      phase: this.phase,
      bytes_done: this.bytesDone,
      bytes_total: this.bytesTotal,
      rate_bps: Math.round(rate),
      eta_seconds: eta === null ? null : Math.round(eta),
      resumes: this.resumes(),
    };
    if (this.sourceBytesTotal !== null || this.sourceBytesDone > 0) {
      event.source_bytes_done = this.sourceBytesDone;
      event.source_bytes_total = this.sourceBytesTotal;
    }
    if (message !== undefined) event.message = message;
    return event;
  }
}
