/**
 * Where the agent's server and MAC come from: the command line first, else the kernel command
 * line the PXE boot script wrote (`bty.server=` and `bty.mac=` in /proc/cmdline).
 */
import { readFile } from 'node:fs/promises';
import { normaliseMac } from '../core/mac.ts';

export const DEFAULT_CMDLINE_PATH = '/proc/cmdline';
/** Upstream's default: the name a lab's DNS usually gives the bty-web host. */
export const DEFAULT_SERVER = 'bty-server';

export interface CmdlineValues {
  server?: string;
  mac?: string;
}

/**
 * The `bty.server=` and `bty.mac=` parameters of a kernel command line. The last occurrence
 * wins, as it does for the kernel's own parameters; surrounding double quotes are dropped.
 */
export function parseCmdline(text: string): CmdlineValues {
  const values: CmdlineValues = {};
  for (const token of text.trim().split(/\s+/)) {
    const eq = token.indexOf('=');
    if (eq < 0) continue;
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1).replace(/^"(.*)"$/, '$1');
    if (value === '') continue;
    if (key === 'bty.server') values.server = value;
    else if (key === 'bty.mac') values.mac = value;
  }
  return values;
}

/** Reads the parameters from a cmdline file; a missing or unreadable file gives none. */
export async function readCmdline(path = DEFAULT_CMDLINE_PATH): Promise<CmdlineValues> {
  try {
    return parseCmdline(await readFile(path, 'utf8'));
  } catch {
    return {};
  }
}

/**
 * The server's base URL: trimmed, trailing slashes dropped, and `http://` assumed for a bare
 * host (`10.0.0.5:8080`), as upstream does.
 */
export function normaliseServer(raw: string): string {
  const trimmed = raw.trim().replace(/\/+$/, '');
  return trimmed.includes('://') ? trimmed : `http://${trimmed}`;
}

export interface AgentSettings {
  /** Base URL without a trailing slash. */
  server: string;
  /** Canonical `aa:bb:cc:dd:ee:ff`. */
  mac: string;
}

/**
 * The settings for a run, or null when no MAC is known at all (then there is no agent to run).
 * A malformed MAC throws BTY_ERR_BAD_INPUT (exit 2): every URL the agent uses is built from it.
 */
export async function resolveAgentSettings(
  flags: { server?: string | undefined; mac?: string | undefined },
  cmdlinePath = DEFAULT_CMDLINE_PATH,
): Promise<AgentSettings | null> {
  const fromCmdline =
    flags.server !== undefined && flags.mac !== undefined ? {} : await readCmdline(cmdlinePath);
  const mac = nonBlank(flags.mac) ?? nonBlank(fromCmdline.mac);
  if (mac === undefined) return null;
  const server = nonBlank(flags.server) ?? nonBlank(fromCmdline.server) ?? DEFAULT_SERVER;
  return { server: normaliseServer(server), mac: normaliseMac(mac) };
}

function nonBlank(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
