/**
 * After the bytes are on the disk: make the kernel see the new partition table, and (opt-in)
 * ask UEFI firmware to boot the freshly written disk once.
 *
 * Nothing here fails a flash that succeeded: every helper is bounded in time and its failures
 * become notes.
 */
import { spawn } from 'node:child_process';
import { access, constants, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

const SETTLE_TIMEOUT_MS = 30_000;
const EFIBOOTMGR_TIMEOUT_MS = 30_000;
const LSBLK_TIMEOUT_MS = 15_000;
const EFI_SYSTEM_PARTITION_TYPE = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
const BOOT_ENTRY_LABEL = 'bty flashed';

interface ToolResult {
  outcome: 'ok' | 'failed' | 'timeout' | 'missing';
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Re-reads the partition table of a freshly written block device (`partprobe`, or `partx -u`
 * when parted is not installed) and waits for udev to create the partition nodes. Returns notes
 * on whatever was skipped or failed; never throws.
 */
export async function settleBlockDevice(path: string): Promise<string[]> {
  const notes: string[] = [];
  let reread = await runBounded('partprobe', [path], SETTLE_TIMEOUT_MS);
  let tool = 'partprobe';
  if (reread.outcome === 'missing') {
    tool = 'partx -u';
    reread = await runBounded('partx', ['-u', path], SETTLE_TIMEOUT_MS);
  }
  if (reread.outcome === 'missing') {
    notes.push(
      `partition table of ${path} not re-read: neither partprobe (Debian package parted) nor partx (util-linux) is installed`,
    );
  } else {
    const note = describeProblem(`${tool} ${path}`, reread);
    if (note) notes.push(note);
  }

  const settle = await runBounded('udevadm', ['settle'], SETTLE_TIMEOUT_MS);
  if (settle.outcome === 'missing') {
    notes.push('did not wait for udev: udevadm is not installed (Debian package udev)');
  } else {
    const note = describeProblem('udevadm settle', settle);
    if (note) notes.push(note);
  }
  return notes;
}

function describeProblem(what: string, result: ToolResult): string | null {
  if (result.outcome === 'timeout') {
    return `${what} did not finish within ${SETTLE_TIMEOUT_MS / 1000} s; skipped (the disk may be failing)`;
  }
  if (result.outcome === 'failed') {
    const detail = result.stderr.trim().split('\n')[0] ?? '';
    return `${what} exited with status ${result.exitCode ?? '?'}${detail ? `: ${detail}` : ''}`;
  }
  return null;
}

/** True when `BTY_REGISTER_UEFI_BOOT` opts in (1, true, yes, on; any case, spaces ignored). */
export function uefiRegistrationEnabled(env: NodeJS.ProcessEnv): boolean {
  const value = (env.BTY_REGISTER_UEFI_BOOT ?? '').trim().toLowerCase();
  return ['1', 'true', 'yes', 'on'].includes(value);
}

/**
 * Opt-in (`BTY_REGISTER_UEFI_BOOT`): adds a "bty flashed" UEFI boot entry for the disk's EFI
 * System Partition and makes it the one-shot BootNext. Returns a status line, or null when not
 * enabled. Never throws and never rewrites BootOrder (`efibootmgr -o`): that once left a server
 * board unable to reach its PXE entry again.
 */
export async function registerUefiBootEntry(
  disk: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  if (!uefiRegistrationEnabled(env)) return null;
  try {
    return await registerEntry(disk, env);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return `could not register UEFI boot entry: ${message} (flash succeeded; firmware may not boot the disk)`;
  }
}

async function registerEntry(disk: string, env: NodeJS.ProcessEnv): Promise<string> {
  const efivars = await stat('/sys/firmware/efi/efivars').then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!efivars) {
    return 'skipped UEFI boot entry: this machine was not booted in UEFI mode (no /sys/firmware/efi/efivars)';
  }
  if (!(await onPath('efibootmgr', env))) {
    return 'skipped UEFI boot entry: efibootmgr is not installed (Debian package efibootmgr)';
  }
  let lsblk = await runBounded(
    'lsblk',
    ['-J', '-o', 'PATH,PARTTYPE,PARTN', disk],
    LSBLK_TIMEOUT_MS,
    env,
  );
  if (lsblk.outcome === 'failed') {
    // lsblk before util-linux 2.39 (Debian 12) has no PARTN column; the path's digits suffice.
    lsblk = await runBounded('lsblk', ['-J', '-o', 'PATH,PARTTYPE', disk], LSBLK_TIMEOUT_MS, env);
  }
  let partition = lsblk.outcome === 'ok' ? findEspPartitionNumber(lsblk.stdout) : null;
  if (partition === null) {
    // lsblk takes PARTTYPE from the udev database; read the partition table itself when udev
    // has not (yet) recorded it.
    const sfdisk = await runBounded('sfdisk', ['-J', disk], LSBLK_TIMEOUT_MS, env);
    partition = sfdisk.outcome === 'ok' ? findEspPartitionNumber(sfdisk.stdout) : null;
  }
  if (partition === null) {
    return `skipped UEFI boot entry: no EFI System Partition found on ${disk}`;
  }

  const efibootmgr = (args: string[]) => runEfibootmgr(args, env);
  for (const entry of parseBootEntries(await efibootmgr([]))) {
    if (entry.label === BOOT_ENTRY_LABEL) await efibootmgr(['-b', entry.bootnum, '-B']);
  }
  await efibootmgr([
    '--create-only',
    '--disk',
    disk,
    '--part',
    String(partition),
    '--loader',
    fallbackLoaderPath(),
    '--label',
    BOOT_ENTRY_LABEL,
  ]);
  const created = parseBootEntries(await efibootmgr([]))
    .filter((e) => e.label === BOOT_ENTRY_LABEL)
    .at(-1);
  if (!created) return `created UEFI boot entry on ${disk} (could not confirm BootNext)`;
  await efibootmgr(['-n', created.bootnum]);
  return (
    `registered UEFI boot entry Boot${created.bootnum} -> ${disk} (ESP partition ${partition}); ` +
    'BootNext set for the next boot only, BootOrder untouched'
  );
}

/** The removable-media loader path firmware looks for on an ESP, per CPU architecture. */
function fallbackLoaderPath(): string {
  return process.arch === 'arm64' ? '\\EFI\\BOOT\\BOOTAA64.EFI' : '\\EFI\\BOOT\\BOOTX64.EFI';
}

async function runEfibootmgr(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const result = await runBounded('efibootmgr', args, EFIBOOTMGR_TIMEOUT_MS, env);
  if (result.outcome === 'ok') return result.stdout;
  const why =
    result.outcome === 'timeout'
      ? `did not finish within ${EFIBOOTMGR_TIMEOUT_MS / 1000} s`
      : result.outcome === 'missing'
        ? 'is not installed'
        : `exited with status ${result.exitCode ?? '?'}: ${result.stderr.trim()}`;
  throw new Error(`efibootmgr ${args.join(' ')} ${why}`.replace(/\s+/g, ' ').trim());
}

/**
 * The partition number of the first EFI System Partition (GPT type GUID, or MBR type `ef`) in
 * `lsblk -J -o PATH,PARTTYPE[,PARTN]` output (flat or tree) or `sfdisk -J` output. Without PARTN
 * the number is the trailing digits of the partition's path (`/dev/nvme0n1p2` → 2).
 */
export function findEspPartitionNumber(json: string): number | null {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return null;
  }
  for (const part of partitionsIn(doc)) {
    const type = typeof part.type === 'string' ? part.type.toLowerCase() : '';
    if (type !== EFI_SYSTEM_PARTITION_TYPE && type !== 'ef' && type !== '0xef') continue;
    const partn =
      typeof part.partn === 'string' || typeof part.partn === 'number' ? Number(part.partn) : NaN;
    if (Number.isInteger(partn) && partn > 0) return partn;
    const digits = typeof part.path === 'string' ? /(\d+)$/.exec(part.path) : null;
    if (digits?.[1]) return Number(digits[1]);
  }
  return null;
}

function partitionsIn(doc: unknown): Array<{ path: unknown; type: unknown; partn: unknown }> {
  if (typeof doc !== 'object' || doc === null) return [];
  const table = (doc as { partitiontable?: { partitions?: unknown } }).partitiontable;
  if (Array.isArray(table?.partitions)) {
    return (table.partitions as Array<Record<string, unknown>>).map((p) => ({
      path: p?.node,
      type: p?.type,
      partn: undefined,
    }));
  }
  const walk = (nodes: unknown): Array<{ path: unknown; type: unknown; partn: unknown }> =>
    Array.isArray(nodes)
      ? (nodes as Array<Record<string, unknown>>).flatMap((n) => [
          { path: n?.path, type: n?.parttype, partn: n?.partn },
          ...walk(n?.children),
        ])
      : [];
  return walk((doc as { blockdevices?: unknown }).blockdevices);
}

export interface BootEntry {
  bootnum: string;
  label: string;
}

/** Entries of `efibootmgr` output: `Boot0003* label<TAB>device path`. */
export function parseBootEntries(output: string): BootEntry[] {
  const entries: BootEntry[] = [];
  for (const line of output.split('\n')) {
    const match = /^Boot([0-9A-Fa-f]{4})\*?\s+(.*)$/.exec(line);
    if (!match?.[1] || match[2] === undefined) continue;
    entries.push({ bootnum: match[1], label: (match[2].split('\t')[0] ?? '').trim() });
  }
  return entries;
}

async function onPath(program: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Runs a helper with a hard deadline. On timeout the child is killed and abandoned rather than
 * awaited: a process stuck in D-state on a dying disk ignores SIGKILL until its I/O returns.
 */
function runBounded(
  program: string,
  args: string[],
  timeoutMs: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ToolResult> {
  return new Promise((resolvePromise) => {
    let stdout = '';
    let stderr = '';
    let done = false;
    const finish = (result: Omit<ToolResult, 'stdout' | 'stderr'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolvePromise({ ...result, stdout, stderr });
    };
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      finish({ outcome: 'timeout', exitCode: null });
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (stdout.length < 1_000_000) stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < 64_000) stderr += chunk;
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') stderr ||= err.message;
      finish({ outcome: err.code === 'ENOENT' ? 'missing' : 'failed', exitCode: null });
    });
    child.on('close', (code) => {
      finish({ outcome: code === 0 ? 'ok' : 'failed', exitCode: code });
    });
  });
}
