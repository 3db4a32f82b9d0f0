/**
 * Console markers: the exact lines a CI chain greps on the serial console to follow an
 * unattended flash (`bty: auto-flash starting`, `bty: flash complete; rebooting`). They go to
 * stdout and, best effort, to the system console, which is where a serial console shows them
 * even when the agent's stdout is a virtual terminal.
 */
import { appendFileSync } from 'node:fs';

export const MARKER_AUTO_FLASH_STARTING = 'bty: auto-flash starting';
export const MARKER_FLASH_COMPLETE = 'bty: flash complete; rebooting';

export const DEFAULT_CONSOLE_PATH = '/dev/console';
/** Where markers are echoed besides stdout; set it empty to echo them nowhere (tests). */
export const CONSOLE_ENV = 'BTY_AGENT_CONSOLE';

export function consolePathFromEnv(env: NodeJS.ProcessEnv = process.env): string | null {
  const value = env[CONSOLE_ENV];
  if (value === undefined) return DEFAULT_CONSOLE_PATH;
  return value.trim() === '' ? null : value;
}

/** Writes `line` to `out` and appends it to the console device; console errors are ignored. */
export function emitMarker(line: string, out: (text: string) => void, consolePath: string | null) {
  out(`${line}\n`);
  if (consolePath === null) return;
  try {
    // Appending (not truncating) also makes a regular file usable as the console in tests.
    appendFileSync(consolePath, `${line}\n`);
  } catch {
    // No console, or not writable: stdout has the marker.
  }
}
