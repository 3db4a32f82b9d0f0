/**
 * How the CLI talks: human text on stdout, errors on stderr with their code and hint, and with
 * `--json` one JSON document (or JSON lines for streams) on stdout instead.
 */
import { BtyError, asBtyError, EXIT, type ExitCode } from '../core/errors.ts';

export interface CliIO {
  out: (text: string) => void;
  err: (text: string) => void;
  /** True when stderr is a terminal (progress bars, colours, prompts). */
  isTTY: boolean;
}

export const processIO: CliIO = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTTY: Boolean(process.stderr.isTTY),
};

export function printJson(io: CliIO, value: unknown): void {
  io.out(JSON.stringify(value, null, 2) + '\n');
}

export function printJsonLine(io: CliIO, value: unknown): void {
  io.out(JSON.stringify(value) + '\n');
}

/** Reports a failure the way the mode asks for and returns the exit code to use. */
export function reportError(io: CliIO, err: unknown, json: boolean): ExitCode {
  const e = asBtyError(err);
  if (json) {
    printJsonLine(io, { type: 'error', ok: false, error: e.toJSON(), exit_code: e.exitCode });
  } else {
    io.err(`bty: error: ${e.message} [${e.code}]\n`);
    io.err(`bty: hint: ${e.hint}\n`);
    if (
      e.code === 'BTY_ERR_INTERNAL' &&
      err instanceof Error &&
      err.stack &&
      process.env.BTY_DEBUG
    ) {
      io.err(err.stack + '\n');
    }
  }
  return e instanceof BtyError ? e.exitCode : EXIT.failure;
}

/** `1,234.5 MiB`, or `?` for unknown. */
export function formatMiB(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || bytes < 0) return '?';
  return (
    (bytes / 1048576).toLocaleString('en-US', {
      minimumFractionDigits: 1,
      maximumFractionDigits: 1,
    }) + ' MiB'
  );
}

/** Human size with a binary unit: `512 B`, `1.5 GiB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || bytes < 0) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** A plain left-aligned text table; null/undefined cells print as blanks. */
export function renderTable(
  headers: string[],
  rows: Array<Array<string | null | undefined>>,
): string {
  const cells = rows.map((r) => r.map((c) => c ?? ''));
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)),
  );
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n') + '\n';
}
