/**
 * One agent per machine: the live environment runs the agent on tty1, and an operator typing
 * `bty` on another console (bty.mac= is on the kernel command line, so it would run the agent
 * too) must not start a second auto-flash of the same disk. The lock is a file created with
 * O_EXCL holding the owner's PID; a lock whose PID is no longer alive is left over from a
 * crashed agent and is replaced.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';

export const DEFAULT_LOCK_PATH = '/run/bty-agent.lock';

export type AgentLock =
  | { ok: true; release: () => void }
  /** Another live agent holds the lock. */
  | { ok: false; holder: number };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else; it still holds the lock.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function holderOf(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Takes the lock for `pid`. The lock is released by `release()` and, as a last resort, when the
 * process exits (a signal's process.exit skips the agent's own clean-up).
 */
export function acquireAgentLock(path: string, pid: number = process.pid): AgentLock {
  // A few rounds: a stale lock is removed and the create tried again; losing that race to
  // another agent then shows its PID.
  for (let round = 0; round < 3; round++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') {
        // No /run (or not writable): nothing to coordinate through; run rather than refuse.
        return { ok: true, release: () => undefined };
      }
      const holder = holderOf(path);
      if (holder !== null && holder !== pid && alive(holder)) return { ok: false, holder };
      try {
        unlinkSync(path);
      } catch {
        // Someone else removed it first; the next create decides.
      }
      continue;
    }
    try {
      writeSync(fd, `${pid}\n`);
    } finally {
      closeSync(fd);
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      process.off('exit', release);
      // Only our own lock: never remove one a later agent took after ours was judged stale.
      if (holderOf(path) === pid) {
        try {
          unlinkSync(path);
        } catch {
          // Already gone.
        }
      }
    };
    process.on('exit', release);
    return { ok: true, release };
  }
  const holder = holderOf(path);
  return { ok: false, holder: holder ?? 0 };
}
