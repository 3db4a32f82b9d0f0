/**
 * Console markers: the exact lines a CI chain greps on the serial console to follow an
 * unattended flash (`bty: auto-flash starting`, `bty: flash complete; rebooting`). They go to
 * stdout and, best effort, to the system console, which is where a serial console shows them
 * even when the agent's stdout is a virtual terminal, and to the kernel log (`/dev/kmsg`, info
 * priority), which survives in `dmesg` and the journal after the console scrolled away.
 */
import { appendFileSync } from 'node:fs';
import { VERSION } from '../core/version.ts';

export const MARKER_AUTO_FLASH_STARTING = 'bty: auto-flash starting';
export const MARKER_FLASH_COMPLETE = 'bty: flash complete; rebooting';
/** Upstream §8.3: bracket every agent run, so a console log shows where one began and ended. */
export const markerEntered = (version: string = VERSION) => `bty: entered v${version}`;
export const markerExiting = (version: string = VERSION) => `bty: exiting v${version}`;

export const DEFAULT_CONSOLE_PATH = '/dev/console';
/** Where markers are echoed besides stdout; set it empty to echo them nowhere (tests). */
export const CONSOLE_ENV = 'BTY_AGENT_CONSOLE';

export function consolePathFromEnv(env: NodeJS.ProcessEnv = process.env): string | null {
  const value = env[CONSOLE_ENV];
  if (value === undefined) return DEFAULT_CONSOLE_PATH;
  return value.trim() === '' ? null : value;
}

export const DEFAULT_KMSG_PATH = '/dev/kmsg';
/** Where markers go in the kernel log; set it empty for nowhere (tests: never the host's log). */
export const KMSG_ENV = 'BTY_AGENT_KMSG';

export function kmsgPathFromEnv(env: NodeJS.ProcessEnv = process.env): string | null {
  const value = env[KMSG_ENV];
  if (value === undefined) return DEFAULT_KMSG_PATH;
  return value.trim() === '' ? null : value;
}

/** Where a marker goes besides stdout; null paths are skipped. */
export interface MarkerSinks {
  consolePath: string | null;
  kmsgPath?: string | null;
}

/**
 * Writes `line` to `out`, appends it to the console device and logs it to kmsg with the `<6>`
 * (info) priority prefix; each sink is best effort, and one failing never skips the others.
 */
export function emitMarker(line: string, out: (text: string) => void, sinks: MarkerSinks) {
  out(`${line}\n`);
  // Appending (not truncating) also makes a regular file usable as either device in tests.
  for (const [path, text] of [
    [sinks.consolePath, `${line}\n`],
    [sinks.kmsgPath ?? null, `<6>${line}\n`],
  ] as const) {
    if (path === null) continue;
    try {
      appendFileSync(path, text);
    } catch {
      // No such device, or not writable: stdout has the marker.
    }
  }
}
