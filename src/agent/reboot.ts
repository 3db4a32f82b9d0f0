/**
 * Rebooting the live environment once the agent is done: the init system first (a clean
 * shutdown), then a forced reboot, then the kernel's magic SysRq as the last resort (no init
 * that answers, a read-only root). Each step is bounded so a hung init cannot keep the machine
 * from booting its fresh disk.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';

const STEP_TIMEOUT_MS = 15_000;

export type RebootAction = () => Promise<void>;

function runStep(program: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err) =>
      err ? reject(new Error(err.message, { cause: err })) : resolve(),
    );
  });
}

export interface RebootWays {
  /** Programs tried in order, each bounded by `stepTimeoutMs` (tests give stand-ins). */
  programs?: ReadonlyArray<readonly [string, readonly string[]]>;
  /** The magic SysRq trigger written last; null skips it (tests never reboot the host). */
  sysrqPath?: string | null;
  stepTimeoutMs?: number;
}

export const DEFAULT_REBOOT_PROGRAMS = [
  ['systemctl', ['reboot']],
  ['reboot', ['-f']],
] as const;

/**
 * Asks the machine to reboot; resolves once one of the ways was accepted (the reboot itself
 * follows asynchronously). Rejects only when every way failed.
 */
export async function rebootMachine(
  log: (line: string) => void,
  ways: RebootWays = {},
): Promise<void> {
  const failures: string[] = [];
  for (const [program, args] of ways.programs ?? DEFAULT_REBOOT_PROGRAMS) {
    try {
      await runStep(program, [...args], ways.stepTimeoutMs ?? STEP_TIMEOUT_MS);
      return;
    } catch (err) {
      failures.push(`${program} ${args.join(' ')}: ${(err as Error).message}`);
      log(`bty: ${program} ${args.join(' ')} failed; trying the next way to reboot`);
    }
  }
  const sysrq = ways.sysrqPath === undefined ? '/proc/sysrq-trigger' : ways.sysrqPath;
  if (sysrq === null) throw new Error(`could not reboot: ${failures.join('; ')}`);
  try {
    await writeFile(sysrq, 'b');
  } catch (err) {
    failures.push(`${sysrq}: ${(err as Error).message}`);
    throw new Error(`could not reboot: ${failures.join('; ')}`, { cause: err });
  }
}
