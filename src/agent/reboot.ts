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

function runStep(program: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { timeout: STEP_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err) =>
      err ? reject(new Error(err.message, { cause: err })) : resolve(),
    );
  });
}

/**
 * Asks the machine to reboot; resolves once one of the ways was accepted (the reboot itself
 * follows asynchronously). Rejects only when every way failed.
 */
export async function rebootMachine(log: (line: string) => void): Promise<void> {
  const failures: string[] = [];
  for (const [program, args] of [
    ['systemctl', ['reboot']],
    ['reboot', ['-f']],
  ] as const) {
    try {
      await runStep(program, [...args]);
      return;
    } catch (err) {
      failures.push(`${program} ${args.join(' ')}: ${(err as Error).message}`);
      log(`bty: ${program} ${args.join(' ')} failed; trying the next way to reboot`);
    }
  }
  try {
    await writeFile('/proc/sysrq-trigger', 'b');
  } catch (err) {
    failures.push(`/proc/sysrq-trigger: ${(err as Error).message}`);
    throw new Error(`could not reboot: ${failures.join('; ')}`, { cause: err });
  }
}
