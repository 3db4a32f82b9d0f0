/**
 * Progress for people: one redrawn line on a terminal, or a line now and then (and on every
 * phase change) when stderr is a log file. Scripts use `--json` instead.
 */
import { progressFraction, type FlashProgress } from '../core/progress.ts';
import { formatBytes } from './output.ts';

const BAR_WIDTH = 24;
const LOG_INTERVAL_MS = 5000;

function eta(seconds: number | null): string {
  if (seconds === null) return '';
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return `ETA ${m}:${String(s).padStart(2, '0')}`;
}

/** The text of one progress line (no newline). ASCII only: it must work on a Linux console. */
const PHASE_WORDS: Partial<Record<FlashProgress['phase'], string>> = {
  resolve: 'checking the image and the target',
  sync: 'flushing to the device',
};

export function renderProgressLine(p: FlashProgress): string {
  const words = PHASE_WORDS[p.phase];
  if (words) return `${p.phase.padEnd(8)}  ${p.message ?? words}`;
  const fraction = progressFraction(p);
  const pct = fraction === null ? '  ? %' : `${Math.floor(fraction * 100)}%`.padStart(4);
  const filled = fraction === null ? 0 : Math.round(fraction * BAR_WIDTH);
  const bar =
    fraction === null ? '-'.repeat(BAR_WIDTH) : '#'.repeat(filled) + '.'.repeat(BAR_WIDTH - filled);
  const amount =
    p.bytes_total !== null
      ? `${formatBytes(p.bytes_done)} / ${formatBytes(p.bytes_total)}`
      : formatBytes(p.bytes_done);
  const parts = [p.phase.padEnd(8), `[${bar}]`, pct, amount];
  if (p.source_bytes_total && p.phase === 'write' && p.bytes_total === null) {
    parts.push(
      `(read ${formatBytes(p.source_bytes_done ?? 0)} of ${formatBytes(p.source_bytes_total)})`,
    );
  }
  if (p.rate_bps > 0) parts.push(`${formatBytes(p.rate_bps)}/s`);
  const e = eta(p.eta_seconds);
  if (e) parts.push(e);
  if (p.resumes > 0) parts.push(`resumed ${p.resumes}x`);
  return parts.join('  ');
}

export class ProgressView {
  private lastPhase: string | null = null;
  private lastLog = 0;
  private lineOpen = false;
  private readonly write: (text: string) => void;
  private readonly tty: boolean;

  constructor(write: (text: string) => void, tty: boolean) {
    this.write = write;
    this.tty = tty;
  }

  update(p: FlashProgress): void {
    if (p.phase === 'failed') return this.end();
    const phaseChanged = p.phase !== this.lastPhase;
    if (this.tty) {
      if (phaseChanged && this.lineOpen) this.write('\n');
      this.write(`\r${renderProgressLine(p)}\x1b[K`);
      this.lineOpen = true;
    } else {
      const now = Date.now();
      if (!phaseChanged && now - this.lastLog < LOG_INTERVAL_MS) return;
      this.lastLog = now;
      this.write(renderProgressLine(p) + '\n');
    }
    this.lastPhase = p.phase;
  }

  /** Closes the redrawn line so later output starts on a fresh one. */
  end(): void {
    if (this.lineOpen) this.write('\n');
    this.lineOpen = false;
  }
}
